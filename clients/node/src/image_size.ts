// Width, height and channels of an encoded image, read from its header: what sharp's `info` gives
// for a thumbnail, without decoding it. JPEG (SOF marker), PNG (IHDR), WebP (VP8, VP8L, VP8X) and
// AVIF (the ispe property); zeros when the bytes are none of those.

export interface ImageSize {
  width: number;
  height: number;
  channels?: number;
}

export function imageSize(b: Buffer): ImageSize {
  if (b.length > 24 && b.readUInt32BE(0) === 0x89504e47) {
    const colour = b[25];  // IHDR colour type: 0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA
    const channels = ({ 0: 1, 2: 3, 3: 3, 4: 2, 6: 4 } as Record<number, number>)[colour ?? 2];
    return { width: b.readUInt32BE(16), height: b.readUInt32BE(20), channels };
  }
  if (b.length > 4 && b[0] === 0xff && b[1] === 0xd8) return jpeg(b);
  if (b.length > 30 && b.toString("latin1", 0, 4) === "RIFF" && b.toString("latin1", 8, 12) === "WEBP") return webp(b);
  if (b.length > 12 && b.toString("latin1", 4, 8) === "ftyp") return avif(b);
  return { width: 0, height: 0 };
}

function jpeg(b: Buffer): ImageSize {
  for (let at = 2; at + 9 < b.length; ) {
    if (b[at] !== 0xff) return { width: 0, height: 0 };
    const marker = b[at + 1]!;
    const length = b.readUInt16BE(at + 2);
    // SOF0..SOF15 but DHT (C4), JPG (C8) and DAC (CC)
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      return { height: b.readUInt16BE(at + 5), width: b.readUInt16BE(at + 7), channels: b[at + 9] };
    }
    at += 2 + length;
  }
  return { width: 0, height: 0 };
}

function webp(b: Buffer): ImageSize {
  const chunk = b.toString("latin1", 12, 16);
  if (chunk === "VP8 ") return { width: b.readUInt16LE(26) & 0x3fff, height: b.readUInt16LE(28) & 0x3fff, channels: 3 };
  if (chunk === "VP8L") {
    const bits = b.readUInt32LE(21);
    return { width: (bits & 0x3fff) + 1, height: ((bits >> 14) & 0x3fff) + 1, channels: (bits >> 28) & 1 ? 4 : 3 };
  }
  if (chunk === "VP8X") {
    const alpha = (b[20]! & 0x10) !== 0;
    return { width: 1 + b.readUIntLE(24, 3), height: 1 + b.readUIntLE(27, 3), channels: alpha ? 4 : 3 };
  }
  return { width: 0, height: 0 };
}

function avif(b: Buffer): ImageSize {
  const at = b.indexOf("ispe", 0, "latin1");  // the image spatial extents property
  if (at < 0 || at + 16 > b.length) return { width: 0, height: 0 };
  return { width: b.readUInt32BE(at + 8), height: b.readUInt32BE(at + 12) };
}
