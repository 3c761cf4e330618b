// sharp's one-thread cost of the thumbnail crunch benchmarks: FILE -> WIDTH px WebP (or AVIF, effort
// 4 as crunch's default) at QUALITY, sharp.concurrency(1), timed in-process like
// bench/thumbnail_single.  usage: node single.mjs FILE [WIDTH] [QUALITY] [SECONDS] [webp|avif]
import fs from "node:fs";
import sharp from "sharp";

const [file, width = "400", quality = "80", seconds = "3", format = "webp"] = process.argv.slice(2);
const input = fs.readFileSync(file);
sharp.concurrency(1);
const encode = (image) =>
  // AVIF as crunch (libvips heifsave) writes it below quality 90: 4:2:0 (sharp defaults to 4:4:4).
  format === "avif" ? image.avif({ quality: Number(quality), effort: 4, chromaSubsampling: "4:2:0" })
                    : image.webp({ quality: Number(quality) });
const make = () => encode(sharp(input).rotate().resize(Number(width))).toBuffer();
let out = await make();
const times = [];
const end = performance.now() + Number(seconds) * 1000;
while (performance.now() < end) {
  const t0 = performance.now();
  out = await make();
  times.push(performance.now() - t0);
}
times.sort((a, b) => a - b);
console.log(JSON.stringify({ sharp: sharp.versions.sharp, vips: sharp.versions.vips, webp: sharp.versions.webp,
  aom: sharp.versions.aom, heif: sharp.versions.heif, format,
  per_s: 1000 / (times.reduce((a, b) => a + b) / times.length), median_s: times[times.length >> 1] / 1000, output_bytes: out.length }));
