#!/usr/bin/env python3
"""Runs examples/webgpu/matmul.html in headless Chromium and exits 0 when its
WebGPU compute shader gave the right product (1 otherwise).

The page is served from a loopback HTTP server and POSTs its verdict back to
it. Without a GPU, Chromium's WebGPU runs on SwiftShader, Google's software
Vulkan: a real WebGPU implementation on the CPU. `--adapter` prints only the
adapter's name, which is how a monitor probes that its browser has WebGPU.
"""
import http.server
import pathlib
import queue
import shutil
import subprocess
import sys
import tempfile
import threading

PAGE = pathlib.Path(__file__).resolve().with_name("matmul.html")
FLAGS = [
    "--headless=new", "--no-sandbox", "--no-first-run", "--enable-unsafe-webgpu", "--enable-unsafe-swiftshader",
    "--enable-features=Vulkan", "--use-vulkan=swiftshader", "--use-webgpu-adapter=swiftshader",
    "--disable-vulkan-surface",
]
TIMEOUT_S = 90


def serve(verdicts: "queue.Queue[str]") -> http.server.HTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = PAGE.read_bytes()
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            text = self.rfile.read(int(self.headers.get("content-length", 0))).decode(errors="replace")
            self.send_response(204)
            self.end_headers()
            verdicts.put(text)

        def log_message(self, *_):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run_page() -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return "FAIL no chromium on PATH"
    verdicts: "queue.Queue[str]" = queue.Queue()
    server = serve(verdicts)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen([browser, *FLAGS, f"--user-data-dir={profile}", url],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            return verdicts.get(timeout=TIMEOUT_S)
        except queue.Empty:
            return f"FAIL the page gave no verdict in {TIMEOUT_S} s"
        finally:
            proc.kill()
            proc.wait()
            server.shutdown()


def main() -> int:
    result = run_page()
    passed = result.startswith("PASS")
    if "--adapter" in sys.argv[1:]:
        print(result.split("adapter: ", 1)[1] if passed else result, file=sys.stdout if passed else sys.stderr)
    else:
        print(result)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
