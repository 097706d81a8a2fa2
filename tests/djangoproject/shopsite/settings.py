"""Settings of the test project: the database comes from TEST_DJANGO_* (tests/test_django.py)."""
import os

SECRET_KEY = "fastsched-tests-only"  # a test project's, guarding nothing
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["fastsched.contrib.django", "shop"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if os.environ["TEST_DJANGO_ENGINE"] == "mysql":
    DATABASES = {
        "default": {
            # mysqlclient, Django's default MySQL driver; or mysql-connector's own backend
            "ENGINE": os.environ.get("TEST_DJANGO_MYSQL_ENGINE", "django.db.backends.mysql"),
            "NAME": os.environ["TEST_DJANGO_NAME"],
            "HOST": os.environ["TEST_DJANGO_HOST"],
            "PORT": os.environ["TEST_DJANGO_PORT"],
            "USER": os.environ["TEST_DJANGO_USER"],
            "PASSWORD": os.environ.get("TEST_DJANGO_PASSWORD", ""),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ["TEST_DJANGO_NAME"],
            "OPTIONS": {"timeout": 20},
        }
    }

if os.environ.get("TEST_DJANGO_QUEUE_DB"):  # the queue in a database of its own, by alias
    DATABASES["jobs"] = {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["TEST_DJANGO_QUEUE_DB"]}
    FASTSCHED_DATABASE = "jobs"
