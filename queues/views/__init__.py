"""The views, by what they do:

pages    everything that reads: overview, queue page and its panels, message browser, one message
actions  everything that changes something (all POST, each behind its permission)
audit    the audit log, its CSV export, and bulk jobs
"""
