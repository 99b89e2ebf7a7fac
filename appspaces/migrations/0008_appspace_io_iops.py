from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("appspaces", "0007_appspace_io_limits"),
    ]

    operations = [
        migrations.AddField(
            model_name="appspace",
            name="io_read_iops",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="appspace",
            name="io_write_iops",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
    ]
