"""The shop's pages and JSON APIs (sales, manufacturing, HR)."""
import json

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import render

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
