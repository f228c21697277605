from django.apps import AppConfig
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models.signals import post_migrate, pre_migrate
from psycopg import sql


def create_dashboard_schema(using: str, **kwargs: object) -> None:
    """Create the dashboard's own schema before the first migration puts tables in it.

    Checked first rather than CREATE SCHEMA IF NOT EXISTS, which needs the CREATE privilege on the
    database even when the schema is already there (a DBA may have created it beforehand).
    """
    if using != settings.DASHBOARD_DATABASE_ALIAS:
        return
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [settings.DASHBOARD_SCHEMA])
        if cursor.fetchone() is None:
            cursor.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(settings.DASHBOARD_SCHEMA)).as_string())


# The three roles, as groups of permissions. Admins also need is_staff for Django's admin
# (manage.py add_user --role admin sets it). Only superusers change groups' permissions.
ROLES = {
    "Viewer": [],
    "Operator": ["queues.operate_messages"],
    "Admin": [
        "queues.operate_messages",
        "queues.administer_queues",
        "queues.view_auditentry",
        "queues.view_bulkjob",
        "auth.view_user",
        "auth.add_user",
        "auth.change_user",
        "auth.delete_user",
        "auth.view_group",
        "queues.view_apitoken",
        "queues.add_apitoken",
        "queues.delete_apitoken",
    ],
}


def fully_migrated(using: str) -> bool:
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections[using])
    return not executor.migration_plan(executor.loader.graph.leaf_nodes())


def ensure_roles(using: str, **kwargs: object) -> None:
    """Create the role groups, or give back a permission one lost; other changes to plain roles are
    left alone. A role scoped to one database holds only what it may grant there (queues/access.py):
    anything else is taken off it."""
    # The groups are with the users, in `default`; their changes are recorded in the dashboard's
    # tables, which mounted in another project have an alias of their own, migrated after `default`.
    aliases = {DEFAULT_DB_ALIAS, settings.DASHBOARD_DATABASE_ALIAS}
    if using != settings.DASHBOARD_DATABASE_ALIAS or not all(fully_migrated(alias) for alias in aliases):
        return  # a migrate to an earlier state (`migrate queues 0007`): the models are ahead of the tables
    using = DEFAULT_DB_ALIAS
    from django.contrib.auth.models import Group, Permission

    from queues.access import DATABASE_PERMISSIONS, scoped_group_name

    named = {dotted for permissions in ROLES.values() for dotted in permissions}
    by_name = {
        f"{found.content_type.app_label}.{found.codename}": found
        for found in Permission.objects.using(using)
        .select_related("content_type")
        .filter(codename__in={dotted.split(".")[1] for dotted in named})
    }

    def permission(dotted: str) -> Permission:
        return by_name[dotted]

    # With several watched databases, each role also exists for each one alone.
    databases = list(settings.WATCHED_DATABASES) if len(settings.WATCHED_DATABASES) > 1 else []
    for role, permissions in ROLES.items():
        group, _ = Group.objects.using(using).get_or_create(name=role)
        group.permissions.add(*map(permission, permissions))
        scoped_permissions = [
            dotted for dotted in permissions if dotted.removeprefix("queues.") in DATABASE_PERMISSIONS
        ]
        for database in databases:
            group, _ = Group.objects.using(using).get_or_create(name=scoped_group_name(database, role))
            group.permissions.add(*map(permission, scoped_permissions))
            group.permissions.remove(
                *group.permissions.exclude(content_type__app_label="queues", codename__in=DATABASE_PERMISSIONS)
            )


class QueuesConfig(AppConfig):
    name = "queues"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from dashboard.databases import settings_kept

        connection_created.connect(settings_kept, dispatch_uid="settings_kept")
        pre_migrate.connect(create_dashboard_schema, sender=self)
        # After auth's own post_migrate handler has created the permissions.
        post_migrate.connect(ensure_roles, sender=self)
        from queues import account_audit

        account_audit.connect()
        from django.contrib.auth.signals import user_logged_in

        from queues.sign_in_limits import take_back_on_sign_in

        user_logged_in.connect(take_back_on_sign_in, dispatch_uid="sign_in_limits")
