"""Regenerate the dashboard screenshots in docs/images (SVG, exported by Textual).

    python tools/dashboard_screenshots.py [--out docs/images]

Everything is real: a generated model served by `bitnet serve` on loopback with traffic (one
request failing), the dashboard attached to it (live), its telemetry file replayed under the
Release theme, and two snapshots of a models folder that drifted (a changed file, a missing
file, another version) shown offline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import httpx

from bitnet.dashboard import DashboardApp, LiveSource, ReplaySource
from bitnet.snapshot import take_snapshot
from bitnet.testing import generate_model
from bitnet.testing.server import ServerProcess

SIZE = (150, 44)


def traffic(url: str, key: str) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    for i in range(6):
        body = {"prompt": f"request {i}", "max_tokens": 8 + 4 * i}
        httpx.post(url + "/v1/completions", json=body, headers=auth).raise_for_status()
    httpx.post(url + "/v1/completions", json={"prompt": [99999], "max_tokens": 1}, headers=auth)


async def shoot(app: DashboardApp, out: Path, name: str) -> None:
    async with app.run_test(size=SIZE) as pilot:
        while app.mode != "offline" and app.frame is None:
            await pilot.pause(0.05)
        if app.mode == "live":
            seen = app.refreshes
            while app.refreshes < seen + 2:
                await pilot.pause(0.05)
        await pilot.pause(0.2)
        app.save_screenshot(name, str(out))
    print(f"wrote {out / name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/images", help="folder for the SVG files")
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = root / "models"
        models.mkdir()
        model = generate_model(models / "assistant.gguf", seed=3)
        generate_model(models / "summarizer.gguf", seed=4)
        sink = root / "telemetry.jsonl"
        srv = ServerProcess(
            model, "-t", "1", "--parallel", "2", "--api-key", "k", "--telemetry-file", str(sink)
        )
        try:
            live = LiveSource(srv.url, "k")
            app = DashboardApp("live", source=live, refresh_seconds=0.3, period=30)

            async def live_shot() -> None:
                async with app.run_test(size=SIZE) as pilot:
                    while app.frame is None:
                        await pilot.pause(0.05)
                    await asyncio.to_thread(traffic, srv.url, "k")
                    seen = app.refreshes
                    while app.refreshes < seen + 2:
                        await pilot.pause(0.05)
                    app.save_screenshot("dashboard-live.svg", str(out))
                print(f"wrote {out / 'dashboard-live.svg'}")

            asyncio.run(live_shot())
            before = take_snapshot([models], server=srv.url, api_key="k")
            live.close()
            time.sleep(1.0)
            traffic(srv.url, "k")  # a second period for the Release table of the replay
        finally:
            srv.stop()
        deadline = time.monotonic() + 5
        while "server_stop" not in sink.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        replay = DashboardApp("replay", source=ReplaySource(sink), theme="release", period=None)
        asyncio.run(shoot(replay, out, "dashboard-replay-release.svg"))
        data = bytearray((models / "assistant.gguf").read_bytes())
        data[-1] ^= 0xFF
        (models / "assistant.gguf").write_bytes(bytes(data))
        (models / "summarizer.gguf").unlink()
        after = take_snapshot([models])
        after["versions"]["bitnet"] = "0.2.0"  # as the device's newer build would report
        (root / "after.json").write_text(json.dumps(after))
        offline = DashboardApp("offline", snapshot=before, compare=after)
        asyncio.run(shoot(offline, out, "dashboard-offline-drift.svg"))


if __name__ == "__main__":
    main()
