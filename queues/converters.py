from urllib.parse import unquote


class QueueNameConverter:
    """Any pgmq queue name as one URL path segment, including names with '/', '%' or only dots.

    Servers decode %2F to '/' before Django routes a request, so '/' and '%' are escaped once more
    here: reverse() then sends them as %252F and %2525, the server turns those back into %2F and
    %25, and to_python undoes that. Browsers drop '.' and '..' segments, so those are escaped too.
    """

    regex = "[^/]+"

    def to_python(self, value: str) -> str:
        return unquote(value)

    def to_url(self, value: str) -> str:
        escaped = value.replace("%", "%25").replace("/", "%2F")
        if set(escaped) == {"."}:
            escaped = escaped.replace(".", "%2E")
        return escaped
