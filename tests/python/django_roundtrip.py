"""Django (5.x) on PyMySQL against a MySQL endpoint: migrations of contrib apps and of an app
of its own, then what an application does with the ORM. Prints a canonical transcript so the
caller can compare the proxy with a direct connection.

usage: django_roundtrip.py PORT DATABASE
"""
import datetime
import decimal
import os
import sys
import tempfile

import pymysql

pymysql.install_as_MySQLdb()

port, dbname = int(sys.argv[1]), sys.argv[2]
conn = pymysql.connect(host="127.0.0.1", port=port, user="root", password="", autocommit=True)
conn.cursor().execute(f"CREATE DATABASE IF NOT EXISTS `{dbname}`")
conn.close()

app_dir = tempfile.mkdtemp()
os.makedirs(os.path.join(app_dir, "shop", "migrations"))
open(os.path.join(app_dir, "shop", "__init__.py"), "w").close()
open(os.path.join(app_dir, "shop", "migrations", "__init__.py"), "w").close()
with open(os.path.join(app_dir, "shop", "models.py"), "w") as f:
    f.write('''
from django.db import models

class Customer(models.Model):
    name = models.CharField(max_length=100, unique=True)
    email = models.EmailField(blank=True)
    balance = models.DecimalField(max_digits=12, decimal_places=2, default=0)
    tags = models.JSONField(default=list)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

class Order(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="orders")
    total = models.DecimalField(max_digits=12, decimal_places=2)
    status = models.CharField(max_length=20, default="new", db_index=True)
    placed = models.DateField()
    class Meta:
        ordering = ["id"]
''')
sys.path.insert(0, app_dir)

import django
from django.conf import settings

settings.configure(
    DATABASES={"default": {
        "ENGINE": "django.db.backends.mysql", "NAME": dbname, "USER": "root", "PASSWORD": "",
        "HOST": "127.0.0.1", "PORT": str(port), "OPTIONS": {"charset": "utf8mb4"},
    }},
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "shop"],
    USE_TZ=True,
    TIME_ZONE="UTC",
    DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
)
django.setup()

from io import StringIO
from django.core.management import call_command
from django.db import connection, transaction, IntegrityError
from django.db.models import Count, F, Q, Sum
from django.contrib.auth.models import User, Group, Permission

out = []
def show(label, value):
    out.append(f"{label}: {value}")

call_command("makemigrations", "shop", verbosity=0)
call_command("migrate", verbosity=0)
show("tables", sorted(connection.introspection.table_names()))
from django.db.migrations.recorder import MigrationRecorder
show("recorded", sorted(f"{m.app}.{m.name}" for m in MigrationRecorder.Migration.objects.all()))
show("permissions", Permission.objects.count())

from shop.models import Customer, Order

# Creates, a unique violation inside atomic (its savepoint rolls back), bulk create.
a = Customer.objects.create(name="ada", email="ada@example.com", balance=decimal.Decimal("10.50"), tags=["x"])
try:
    with transaction.atomic():
        Customer.objects.create(name="ada")
except IntegrityError as e:
    show("duplicate", e.args[0])
Customer.objects.bulk_create([Customer(name=f"c{i}", balance=i) for i in range(5)])
show("customers", list(Customer.objects.order_by("name").values_list("name", "balance", "tags")))
show("ids increase", [c.id for c in Customer.objects.order_by("id")] == sorted(c.id for c in Customer.objects.all()))

# Orders, F expressions, aggregates, an update, a delete cascading.
day = datetime.date(2024, 2, 29)
for c in Customer.objects.order_by("id"):
    Order.objects.create(customer=c, total=c.balance * 2 + 1, placed=day)
Order.objects.filter(total__gt=5).update(status="big", total=F("total") + 1)
show("orders", list(Order.objects.values_list("customer__name", "total", "status", "placed")))
show("by status", list(Order.objects.values("status").annotate(n=Count("id"), s=Sum("total")).order_by("status")))
Customer.objects.filter(name="c0").delete()
show("after cascade", Order.objects.count())

# A transaction with SELECT ... FOR UPDATE, then get_or_create both ways.
with transaction.atomic():
    locked = Customer.objects.select_for_update().get(name="ada")
    locked.balance = F("balance") - decimal.Decimal("0.50")
    locked.save()
locked.refresh_from_db()
show("ada", (locked.balance, locked.updated >= locked.created))
obj, made = Customer.objects.get_or_create(name="grace", defaults={"balance": 3})
show("get_or_create new", made)
obj, made = Customer.objects.get_or_create(name="grace", defaults={"balance": 4})
show("get_or_create existing", (made, obj.balance))

# A rolled-back atomic block leaves nothing.
try:
    with transaction.atomic():
        Customer.objects.create(name="gone")
        raise RuntimeError("roll back")
except RuntimeError:
    pass
show("rolled back", Customer.objects.filter(name="gone").exists())

# JSON lookups, Q objects, iterator over a larger set.
Customer.objects.filter(name="ada").update(tags=["x", {"k": 1}])
show("json contains", list(Customer.objects.filter(tags__contains=["x"]).values_list("name", flat=True)))
show("q", list(Customer.objects.filter(Q(balance__gte=3) | Q(name__startswith="a")).order_by("name").values_list("name", flat=True)))
Customer.objects.bulk_create([Customer(name=f"bulk{i:04d}") for i in range(500)])
show("iterated", sum(1 for _ in Customer.objects.filter(name__startswith="bulk").iterator(chunk_size=100)))

# Auth: a user with a hashed password, a group, a permission.
u = User.objects.create_user("alan", "alan@example.com", "s3cret")
g = Group.objects.create(name="staff")
u.groups.add(g)
g.permissions.add(Permission.objects.get(codename="add_customer"))
u = User.objects.get(username="alan")
show("auth", (u.check_password("s3cret"), u.has_perm("shop.add_customer"), list(u.groups.values_list("name", flat=True))))

# A second migration on tables with rows: a column added, one altered, an index, a model.
with open(os.path.join(app_dir, "shop", "migrations", "0002_more.py"), "w") as f:
    f.write('''
from django.db import migrations, models
import django.db.models.deletion

class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial")]
    operations = [
        migrations.AddField("customer", "phone", models.CharField(max_length=20, null=True)),
        migrations.AlterField("order", "status", models.CharField(max_length=30, default="new", db_index=True)),
        migrations.AddIndex("customer", models.Index(fields=["balance"], name="cust_balance")),
        migrations.CreateModel("Note", [
            ("id", models.BigAutoField(primary_key=True, serialize=False)),
            ("text", models.TextField()),
            ("customer", models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL, to="shop.customer")),
        ]),
    ]
''')
call_command("migrate", verbosity=0)
with connection.cursor() as cur:
    cur.execute("INSERT INTO shop_note (customer_id, text) SELECT id, name FROM shop_customer WHERE name = 'ada'")
    cur.execute("UPDATE shop_customer SET phone = '555' WHERE name = 'ada'")
    cur.execute("SELECT n.text, c.phone FROM shop_note n JOIN shop_customer c ON c.id = n.customer_id")
    show("note", cur.fetchall())
show("indexes", sorted(i for i in connection.introspection.get_constraints(connection.cursor(), "shop_customer")))
show("recorded after", MigrationRecorder.Migration.objects.filter(app="shop").count())

print("\n".join(out))
