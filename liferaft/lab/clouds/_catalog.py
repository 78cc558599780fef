"""The lab Hetzner cloud's fixed catalogue: locations, server types (with hourly prices) and images.

Shapes as Hetzner's API documents them. Prices are the lab's own round figures (EUR, net and gross), not a quote.
"""

from __future__ import annotations

from typing import Any

LOCATIONS: list[dict[str, Any]] = [
    {"id": 1, "name": "fsn1", "description": "Falkenstein DC Park 1", "country": "DE", "city": "Falkenstein",
     "latitude": 50.47612, "longitude": 12.370071, "network_zone": "eu-central"},
    {"id": 2, "name": "nbg1", "description": "Nuremberg DC Park 1", "country": "DE", "city": "Nuremberg",
     "latitude": 49.452102, "longitude": 11.076665, "network_zone": "eu-central"},
    {"id": 3, "name": "hel1", "description": "Helsinki DC Park 1", "country": "FI", "city": "Helsinki",
     "latitude": 60.169855, "longitude": 24.938379, "network_zone": "eu-central"},
]


def _prices(hourly_net: float, monthly_net: float) -> list[dict[str, Any]]:
    def amount(net: float) -> dict[str, str]:
        return {"net": f"{net:.4f}", "gross": f"{net * 1.19:.4f}"}

    return [{"location": loc["name"], "price_hourly": amount(hourly_net), "price_monthly": amount(monthly_net),
             "included_traffic": 21990232555520, "price_per_tb_traffic": amount(1.0)} for loc in LOCATIONS]


def _type(tid: int, name: str, cores: int, memory: float, disk: int, hourly: float, monthly: float) -> dict[str, Any]:
    return {"id": tid, "name": name, "description": name.upper(), "cores": cores, "memory": memory, "disk": disk,
            "deprecated": False, "deprecation": None, "prices": _prices(hourly, monthly), "storage_type": "local",
            "cpu_type": "shared", "architecture": "x86", "category": "cost_optimized"}


SERVER_TYPES: list[dict[str, Any]] = [
    _type(104, "cx22", 2, 4.0, 40, 0.006, 3.79),
    _type(105, "cx32", 4, 8.0, 80, 0.011, 6.80),
    _type(106, "cx42", 8, 16.0, 160, 0.027, 16.40),
]

IMAGES: list[dict[str, Any]] = [
    {"id": 114690387, "type": "system", "status": "available", "name": "debian-12", "description": "Debian 12",
     "image_size": None, "disk_size": 5, "created": "2023-06-13T06:00:02+00:00", "created_from": None,
     "bound_to": None, "os_flavor": "debian", "os_version": "12", "rapid_deploy": True,
     "protection": {"delete": False}, "deprecated": None, "deleted": None, "labels": {}, "architecture": "x86"},
    {"id": 161547269, "type": "system", "status": "available", "name": "ubuntu-24.04", "description": "Ubuntu 24.04",
     "image_size": None, "disk_size": 5, "created": "2024-04-25T13:00:00+00:00", "created_from": None,
     "bound_to": None, "os_flavor": "ubuntu", "os_version": "24.04", "rapid_deploy": True,
     "protection": {"delete": False}, "deprecated": None, "deleted": None, "labels": {}, "architecture": "x86"},
]


def pricing() -> dict[str, Any]:
    """GET /v1/pricing (the server-type part of it)."""
    return {"pricing": {"currency": "EUR", "vat_rate": "19.00",
                        "server_types": [{"id": t["id"], "name": t["name"], "prices": t["prices"]}
                                         for t in SERVER_TYPES]}}
