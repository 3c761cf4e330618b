#!/usr/bin/env bash
# Builds libvips from Debian's own source package with only what crunch's image kind uses — the
# same options as the container image's (Dockerfile, stage "vips") — into a prefix, once:
#   ./scripts/lean_vips.sh [PREFIX=build-deps/vips]      then configure crunch with
#   PKG_CONFIG_PATH=PREFIX/lib/pkgconfig cmake -S . -B build-lean ...
# Why: Debian's libvips42 loads about 100 shared libraries (poppler, librsvg, OpenEXR, HDF5,
# ImageMagick, x265...) at start. Their pages are most of an idle crunchd's resident memory on a
# host build: 38 MB, of which 4 MB anonymous (issue 24). The lean build loads about 25.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="$(realpath -m "${1:-$root/build-deps/vips}")"
if [[ -f "$prefix/lib/pkgconfig/vips.pc" ]]; then
  echo "$prefix"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
sudo=()
if ((EUID != 0)); then sudo=(sudo); fi
if ! grep -qs '^Types:.*deb-src' /etc/apt/sources.list.d/debian.sources && ! grep -qs '^deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/*.list; then
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    "${sudo[@]}" sed -i 's/^Types: deb$/Types: deb deb-src/' /etc/apt/sources.list.d/debian.sources
  else
    sed -n 's/^deb /deb-src /p' /etc/apt/sources.list | "${sudo[@]}" tee /etc/apt/sources.list.d/deb-src.list >/dev/null
  fi
  "${sudo[@]}" apt-get update -qq
fi
"${sudo[@]}" apt-get install -y -qq --no-install-recommends dpkg-dev meson ninja-build cmake pkg-config gcc g++ \
  libglib2.0-dev libexpat1-dev libjpeg62-turbo-dev libpng-dev libwebp-dev libexif-dev liblcms2-dev \
  liborc-0.4-dev zlib1g-dev libaom-dev >/dev/null
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# libheif with libaom alone, for AVIF (as the Dockerfile builds it).
(cd "$work" && apt-get source --only-source libheif >/dev/null 2>&1)
(cd "$work"/libheif-*/ &&
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_INSTALL_LIBDIR=lib \
    -DWITH_EXAMPLES=OFF -DENABLE_PLUGIN_LOADING=OFF -DBUILD_TESTING=OFF -DWITH_AOM_ENCODER=ON -DWITH_AOM_DECODER=ON \
    -DWITH_LIBDE265=OFF -DWITH_X265=OFF -DWITH_DAV1D=OFF -DWITH_RAV1E=OFF -DWITH_SvtEnc=OFF >/dev/null &&
  cmake --build build >/dev/null && cmake --install build --strip >/dev/null)
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
(cd "$work" && apt-get source --only-source vips >/dev/null 2>&1)
cd "$work"/vips-*/
meson setup build --prefix="$prefix" --libdir=lib --buildtype=release -Dauto_features=disabled \
  -Djpeg=enabled -Dpng=enabled -Dwebp=enabled -Dexif=enabled -Dlcms=enabled -Dorc=enabled -Dzlib=enabled -Dheif=enabled \
  -Dnsgif=true -Dppm=false -Danalyze=false -Dradiance=false -Dmodules=disabled -Ddeprecated=false \
  -Dcplusplus=false -Dintrospection=false -Dexamples=false >/dev/null
meson compile -C build >/dev/null
meson install -C build --strip >/dev/null
echo "$prefix"
