#!/usr/bin/env python3
"""What an AVIF encode costs, measured, and the image kind's model fitted to it (issue 31).

  bench/avif_cost.py BUILD_DIR [REPEATS=2]

With build/thumbnail_single (the very call crunch's image helpers make, on one thread) and a
photo-like 4000x3000 JPEG from build/make_image:
  - the kind's unit on this machine: the calibration thumbnail (800x600 JPEG to a 200 px WebP),
    in ns per cost unit, as the kind measures it;
  - for each width 400, 1000, 2000, 4000 and effort 0..6, the fastest of REPEATS AVIF thumbnails,
    and the same thumbnail as a JPEG: the AVIF encode is their difference plus the JPEG encode's
    own price (8 units an output pixel);
  - the encode's weight in units per output pixel, and per effort a power law
    weight = c * pixels^k fitted in log space, with each point's error.
Prints the table and the fit as the C++ array kinds/image/image.cpp's model uses.
"""
import json
import math
import os
import subprocess
import sys
import tempfile

build = sys.argv[1] if len(sys.argv) > 1 else "build"
repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 2
single = os.path.join(build, "thumbnail_single")
maker = os.path.join(build, "make_image")
work = tempfile.mkdtemp()
photo = os.path.join(work, "photo.jpg")
small = os.path.join(work, "small.jpg")
subprocess.run([maker, "4000", "3000", "jpeg", "88", photo], check=True, stdout=subprocess.DEVNULL)
subprocess.run([maker, "800", "600", "jpeg", "85", small], check=True, stdout=subprocess.DEVNULL)


def fastest(path, width, fmt, quality, effort=4, seconds=0):
    best = None
    for _ in range(repeats):
        out = subprocess.run([single, path, str(width), fmt, str(quality), str(seconds), "1", str(effort)],
                             check=True, capture_output=True, text=True).stdout
        t = json.loads(out)["fastest_s"]
        best = t if best is None else min(best, t)
    return best


# The unit: the calibration's thumbnail and its cost in units (plan_thumbnail: input/4 + loaded + 8*out,
# the JPEG shrunk by 4 on load to 200x150).
calibration_units = 800 * 600 / 4 + 200 * 150 + 8 * 200 * 150
ns_per_unit = fastest(small, 200, "webp", 80, seconds=1) * 1e9 / calibration_units
print(f"unit: {ns_per_unit:.3f} ns (calibration thumbnail {calibration_units:.0f} units)")

widths = [400, 1000, 2000, 4000]
efforts = range(0, 7)
rows = []
for w in widths:
    h = w * 3 // 4
    pixels = w * h
    jpeg = fastest(photo, w, "jpeg", 80)
    for e in efforts:
        avif = fastest(photo, w, "avif", 50, e)
        encode_ns = (avif - jpeg) * 1e9 + 8 * pixels * ns_per_unit
        weight = encode_ns / pixels / ns_per_unit
        rows.append({"width": w, "pixels": pixels, "effort": e, "avif_s": avif, "jpeg_s": jpeg, "weight": weight})
        print(f"{w:5d} px effort {e}: AVIF {avif * 1000:9.1f} ms, JPEG {jpeg * 1000:7.1f} ms, "
              f"encode {weight:8.1f} units a pixel", flush=True)

print("\nfit per effort: weight = c * pixels^k")
fits = []
for e in efforts:
    points = [(math.log(r["pixels"]), math.log(max(r["weight"], 1e-3))) for r in rows if r["effort"] == e]
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    k = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    c = math.exp(my - k * mx)
    errors = [math.exp(y) / (c * math.exp(x) ** k) - 1 for x, y in points]
    fits.append((c, k))
    print(f"effort {e}: c = {c:.4g}, k = {k:.3f}; errors " + ", ".join(f"{100 * err:+.0f} %" for err in errors))

print("\n// {c, k} per effort 0..6: an output pixel's encode weighs c * pixels^k units.")
print("constexpr std::array<std::pair<double, double>, 7> avif_encode{{" +
      ", ".join(f"{{{c:.4g}, {k:.3f}}}" for c, k in fits) + "}};")
json.dump({"ns_per_unit": ns_per_unit, "rows": rows, "fits": fits}, open(os.path.join(work, "avif_cost.json"), "w"))
print(f"\nmeasurements: {os.path.join(work, 'avif_cost.json')}")
