"""The JSON API (/api/v1/): what the pages show and do, through the same forms, selectors and
services, under the same permissions and audit log. OpenAPI at /api/v1/schema/."""
