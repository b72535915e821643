from django.contrib import admin
from django.urls import include, path

from shop import views

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("api/sales/orders/", views.sales_orders),
    path("api/manufacturing/orders/", views.manufacturing_orders),
    path("api/hr/employees/", views.hr_employees),
]
