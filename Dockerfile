# crunch container image.
#   docker build -t crunch .          (or: podman build -t crunch .)
#   docker run --rm -p 8080:8080 crunch
# Configuration is through the CRUNCH_* environment variables (crunchd --help lists them).

# --- libvips: built from Debian's own source package with only what a thumbnailer needs ----------
# Debian's libvips42 pulls 103 shared libraries (~97 MB: X11, curl, Kerberos, LDAP, ICU, poppler,
# OpenEXR...). crunch reads JPEG, PNG, WebP and GIF (libvips's own nsgif) and writes JPEG, PNG,
# WebP and AVIF; libexif reads the orientation, lcms2 converts embedded colour profiles to sRGB,
# orc vectorises the resampling kernels. Every other loader and saver is left out of the build.
# AVIF: libheif, also from Debian's source, with libaom alone (Debian's libheif1 brings x265,
# libde265 and dav1d as well: 18 MB more that an AVIF writer never uses).
FROM debian:bookworm AS vips
RUN if [ -f /etc/apt/sources.list.d/debian.sources ]; then \
      sed -i 's/^Types: deb$/Types: deb deb-src/' /etc/apt/sources.list.d/debian.sources; fi \
 && if [ -f /etc/apt/sources.list ]; then \
      sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > /etc/apt/sources.list.d/deb-src.list; fi \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      dpkg-dev meson ninja-build cmake pkg-config gcc g++ \
      libglib2.0-dev libexpat1-dev libjpeg62-turbo-dev libpng-dev libwebp-dev libexif-dev liblcms2-dev \
      liborc-0.4-dev zlib1g-dev libaom-dev
# (The package lists stay in this throwaway stage: apt-get source needs the source index.)
WORKDIR /heif
RUN apt-get source --only-source libheif \
 && cd libheif-* \
 && cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/opt/vips \
      -DCMAKE_INSTALL_LIBDIR=lib -DWITH_EXAMPLES=OFF -DENABLE_PLUGIN_LOADING=OFF -DBUILD_TESTING=OFF \
      -DWITH_AOM_ENCODER=ON -DWITH_AOM_DECODER=ON -DWITH_LIBDE265=OFF -DWITH_X265=OFF -DWITH_DAV1D=OFF \
      -DWITH_RAV1E=OFF -DWITH_SvtEnc=OFF \
 && cmake --build build \
 && cmake --install build --strip
ENV PKG_CONFIG_PATH=/opt/vips/lib/pkgconfig
WORKDIR /vips
RUN apt-get source --only-source vips \
 && cd vips-* \
 && meson setup build --prefix=/opt/vips --libdir=lib --buildtype=release -Dauto_features=disabled \
      -Djpeg=enabled -Dpng=enabled -Dwebp=enabled -Dexif=enabled -Dlcms=enabled -Dorc=enabled -Dzlib=enabled \
      -Dheif=enabled \
      -Dnsgif=true -Dppm=false -Danalyze=false -Dradiance=false -Dmodules=disabled -Ddeprecated=false \
      -Dcplusplus=false -Dintrospection=false -Dexamples=false \
 && meson compile -C build \
 && meson install -C build --strip \
 && LD_LIBRARY_PATH=/opt/vips/lib /opt/vips/bin/vips --vips-config > /opt/vips/config.txt

# --- build: crunchd, Release, warnings as errors, and the whole test suite run on it -------------
FROM debian:bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      g++ cmake ninja-build pkg-config libboost1.81-dev nlohmann-json3-dev libgtest-dev libsodium-dev libseccomp-dev \
      libssl-dev ca-certificates libhiredis-dev redis-server libglib2.0-dev libexpat1-dev libjpeg62-turbo-dev libpng-dev libwebp-dev libexif-dev liblcms2-dev \
      liborc-0.4-dev zlib1g-dev libaom-dev \
 && rm -rf /var/lib/apt/lists/*
COPY --from=vips /opt/vips /opt/vips
ENV PKG_CONFIG_PATH=/opt/vips/lib/pkgconfig \
    LD_LIBRARY_PATH=/opt/vips/lib
WORKDIR /src
COPY CMakeLists.txt ./
COPY api api
COPY web web
COPY cmake cmake
COPY include include
COPY kinds kinds
# What the kinds need beyond that (kinds/<name>/debian-packages).
RUN packages="$(cat kinds/*/debian-packages 2>/dev/null || true)" \
 && if [ -n "$packages" ]; then \
      apt-get update && apt-get install -y --no-install-recommends $packages && rm -rf /var/lib/apt/lists/*; fi
COPY workers workers
COPY server server
COPY bench bench
COPY tests tests
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCRUNCH_WERROR=ON \
 && cmake --build build --target crunchd crunch-callback crunch_vips crunch_tests \
 && cd build && ctest --output-on-failure --timeout 300 \
 && strip crunchd crunch-callback libcrunch_vips.so
# The runtime's file system: crunchd, the program its callbacks run in (beside it), its image
# module (loaded by the first image job: crunchd looks in ../lib/crunch/ from its own directory),
# and exactly the shared libraries they load (ldd's closure), at the paths the loader looks in.
RUN mkdir -p /rootfs/opt/vips/lib /rootfs/lib/crunch \
 && cp build/crunchd build/crunch-callback /rootfs/ \
 && cp build/libcrunch_vips.so /rootfs/lib/crunch/ \
 && ldd build/crunchd build/crunch-callback build/libcrunch_vips.so | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }' | sort -u > /rootfs.libs \
 && while read -r lib; do mkdir -p "/rootfs$(dirname "$lib")" && cp -L "$lib" "/rootfs$lib"; done < /rootfs.libs \
 && cp /opt/vips/config.txt /rootfs/opt/vips/ \
 && mkdir -p /rootfs/etc/ssl/certs && cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ \
 && mv /rootfs.libs /rootfs/opt/vips/libraries.txt

# --- runtime: crunchd, its libraries, nothing else ------------------------------------------------
# No shell, no package manager, no user database. The health check is crunchd itself:
# `crunchd --probe` asks /readyz. /opt/vips/libraries.txt lists what is in here.
FROM scratch
COPY --from=build /rootfs/ /
# No ld.so.cache in here: the loader is told where the libraries are.
ENV LD_LIBRARY_PATH=/opt/vips/lib:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    CRUNCH_ADDRESS=0.0.0.0 \
    CRUNCH_PORT=8080
# A numeric user (there is no /etc/passwd), so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --start-period=2s --retries=3 CMD ["/crunchd", "--probe"]
# Exec form: crunchd is PID 1 and gets SIGTERM itself, drains, and exits 0.
ENTRYPOINT ["/crunchd"]
