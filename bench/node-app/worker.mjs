// Piscina's worker for app.mjs: node-argon2 and sharp, as in-process.
import argon2 from "argon2";
import sharp from "sharp";

export default async function ({ op, hash, password, body, width }) {
  if (op === "login") return argon2.verify(hash, password);
  return sharp(Buffer.from(body)).resize(width).webp({ quality: 80 }).toBuffer();
}
