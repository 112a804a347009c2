from django.db import migrations

REAPER = "executions.tasks.reap_executions"


def add_reaper(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name="reap-executions",
        defaults={"func": REAPER, "schedule_type": "I", "minutes": 1, "repeats": -1},
    )


def remove_reaper(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="reap-executions").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("executions", "0001_initial"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(add_reaper, remove_reaper)]
