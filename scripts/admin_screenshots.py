"""Screenshots of the DPO admin on the data `make demo` left behind (for the README).

    python scripts/admin_screenshots.py   # writes docs/images/admin-*.png
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "deletion_platform.settings")
    import django

    django.setup()
    from django.conf import settings
    from playwright.sync_api import sync_playwright

    from deletion.models import DeletionRequest

    password = (Path(settings.DATA_DIR) / "secrets" / "dpo_password").read_text().strip()
    request = DeletionRequest.objects.exclude(outcomes=None).order_by("received_at").first()
    server = subprocess.Popen([sys.executable, "manage.py", "runserver", "127.0.0.1:8765", "--noreload"], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = REPO / "docs" / "images"
    out.mkdir(parents=True, exist_ok=True)
    try:
        time.sleep(4)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            base = "http://127.0.0.1:8765"
            page.goto(f"{base}/admin/login/")
            page.fill("#id_username", "dpo")
            page.fill("#id_password", password)
            page.click("input[type=submit]")
            page.goto(f"{base}/admin/deletion/deletionrequest/")
            page.screenshot(path=str(out / "admin-queue.png"), full_page=True)
            page.goto(f"{base}/admin/deletion/deletionrequest/{request.pk}/change/")
            page.screenshot(path=str(out / "admin-request.png"), full_page=True)
            page.goto(f"{base}/admin/deletion/deletionrequest/dashboard/")
            page.screenshot(path=str(out / "admin-dashboard.png"), full_page=True)
            browser.close()
    finally:
        server.terminate()
    print(f"wrote {out}/admin-queue.png, admin-request.png, admin-dashboard.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
