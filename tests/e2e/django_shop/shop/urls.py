from django.contrib import admin
from django.urls import include, path
from rest_framework.routers import DefaultRouter

from shop import views

# Django REST framework's DefaultRouter, format suffixes on (its default): besides
# /api/inventory/ it routes /api/inventory.json, /api/inventory.json/ and
# /api/inventory/<pk>.json to the same views.
router = DefaultRouter()
router.register("inventory", views.InventoryViewSet, basename="inventory")

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("api/sales/orders/", views.sales_orders),
    path("api/manufacturing/orders/", views.manufacturing_orders),
    path("api/hr/employees/", views.hr_employees),
    path("api/whoami/", views.whoami),
    path("api/", include(router.urls)),
]
