#!/usr/bin/env python3
"""What an AVIF encode costs, measured, and the image kind's model fitted to it (issue 31).

  bench/avif_cost.py BUILD_DIR [REPEATS=2] [WIDTHS=400,600,1000,1500,2000,3000,4000]

With build/thumbnail_single (the very call crunch's image helpers make, on one thread) and a
photo-like 4000x3000 JPEG from build/make_image:
  - the kind's unit on this machine: the calibration thumbnail (800x600 JPEG to a 200 px WebP),
    in ns per cost unit, as the kind measures it;
  - for each width and effort 0..6, the fastest of REPEATS AVIF thumbnails, and the same
    thumbnail as a JPEG: the AVIF encode is their difference plus the JPEG encode's own price (8
    units an output pixel);
  - the encode's weight in units per output pixel.
The weight is far from constant and not even monotonic in the output's size (at effort 6 it
peaks near 2000 px), so no power law fits it (errors up to 61 %): the model is the table itself,
interpolated in log(pixels) (kinds/image/image.cpp). Prints it as the C++ arrays the model uses.
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

widths = [int(w) for w in (sys.argv[3] if len(sys.argv) > 3 else "400,600,1000,1500,2000,3000,4000").split(",")]
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

print("\n// Output pixels measured, and an AVIF encode's weight in units an output pixel, by effort 0..6.")
pixels = [w * (w * 3 // 4) for w in widths]
print(f"constexpr std::array<double, {len(widths)}> avif_pixels{{" + ", ".join(f"{p}" for p in pixels) + "};")
print(f"constexpr std::array<std::array<double, {len(widths)}>, 7> avif_weight{{{{")
for e in efforts:
    row = [r["weight"] for r in rows if r["effort"] == e]
    print("    {" + ", ".join(f"{w:.1f}" for w in row) + "},")
print("}};")
fits = []
json.dump({"ns_per_unit": ns_per_unit, "rows": rows, "fits": fits}, open(os.path.join(work, "avif_cost.json"), "w"))
print(f"\nmeasurements: {os.path.join(work, 'avif_cost.json')}")
