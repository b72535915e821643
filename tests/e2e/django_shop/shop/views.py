"""The shop's pages and JSON APIs (sales, manufacturing, HR)."""
import json

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from rest_framework import viewsets
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

# Orders created through the API (one gunicorn worker: process memory is enough).
ORDERS = [{"id": 1, "customer": "Initech", "total": 120}]


@login_required
def home(request):
    """The dashboard; shows the license tier the gateway forwards, if any."""
    return render(
        request,
        "home.html",
        {"tier": request.META.get("HTTP_X_LICGATE_TIER", "")},
    )


def sales_orders(request):
    """GET: the orders. POST (signed in, CSRF-checked): creates one, 201."""
    if request.method == "POST":
        if not request.user.is_authenticated:
            return JsonResponse({"error": "login required"}, status=401)
        data = json.loads(request.body or b"{}")
        order = {"id": len(ORDERS) + 1, "customer": data.get("customer", ""), "total": data.get("total", 0)}
        ORDERS.append(order)
        return JsonResponse(order, status=201)
    return JsonResponse({"orders": ORDERS, "user": request.user.get_username()})


def manufacturing_orders(request):
    return JsonResponse({"production_orders": [{"id": 7, "product": "Widget", "qty": 40}]})


def hr_employees(request):
    return JsonResponse({"employees": [{"id": 3, "name": "Peter Gibbons"}]})


class InventoryViewSet(viewsets.ViewSet):
    """A DRF viewset (routed with format suffixes): the inventory list and items."""

    permission_classes = [AllowAny]
    authentication_classes = []

    def list(self, request, format=None):
        return Response({"inventory": [{"id": 1, "item": "Widget", "stock": 12}], "view": "inventory-list"})

    def retrieve(self, request, pk=None, format=None):
        return Response({"id": pk, "item": "Widget", "view": "inventory-detail"})


@csrf_exempt
def whoami(request):
    """What Django made of the request: the method it ran, whether it believes the
    request was secure, the host and the client address it sees."""
    return JsonResponse(
        {
            "method": request.method,
            "path": request.path,
            "secure": request.is_secure(),
            "host": request.get_host(),
            "remote_addr": request.META.get("REMOTE_ADDR"),
            "user": request.user.username if request.user.is_authenticated else None,
            "forwarded_proto": request.META.get("HTTP_X_FORWARDED_PROTO"),
            "forwarded": request.META.get("HTTP_FORWARDED"),
        }
    )
