"""Every read the pages make, one module per concern:

stats          every figure of every queue (overview, queue page, sampler)
overview       the overview's rows: health, rates, sparklines; search, sort, pages
history        the sampler's metric history: rates, sparklines, charts over time
distributions  age and read_ct spread of a queue, and its worst poison messages
archive        what was processed when, and how long it took (archived_at - enqueued_at)
messages       the message browser (keyset pages, filters, bounded search) and one message
diagnostics    PostgreSQL's side: bloat, vacuum, long transactions, readers, FIFO groups
topics         pgmq's topic bindings (1.11+) and where a routing key would go
"""
