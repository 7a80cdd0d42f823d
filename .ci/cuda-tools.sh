#!/usr/bin/env bash
# Makes a real CUDA compiler available without a GPU and without installing anything: NVRTC (libnvrtc12 and its
# builtins), ptxas, cuobjdump, nvdisasm and compute-sanitizer from Debian's non-free archive (experimental, where
# NVRTC 12.5 is; sid as the fallback), downloaded with a private apt configuration and unpacked with `dpkg -x` into a
# cache folder outside the repository. Nothing else from that suite is unpacked or installed.
#
#   .ci/cuda-tools.sh          prints the folder (last line of stdout): FOLDER/lib (libnvrtc.so.12, builtins),
#                              FOLDER/bin (ptxas, cuobjdump, nvdisasm), FOLDER/compute-sanitizer; FOLDER/VERSION
#
# The folder is ${PHI2NATIVE_CUDA_TOOLS:-~/.cache/phi2native/cuda-tools}; a complete earlier unpack is reused.
# Exit: 0 ready; 1 the download or unpack failed and CI=true (CI must not pass without the real compiler);
# 3 the same failure elsewhere (a developer without network): said loudly on stderr, and the caller skips the step.
set -uo pipefail

folder=${PHI2NATIVE_CUDA_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/phi2native/cuda-tools}
say() { echo "cuda-tools: $*" >&2; }
fail() {
    say "error: $*"
    if [ "${CI:-}" = "true" ]; then exit 1; fi
    say "SKIPPED: no real CUDA compiler here; kernels are checked by g++ (the emulator) only. CI=true makes this an error."
    exit 3
}

if [ -f "$folder/VERSION" ] && [ -x "$folder/bin/cuobjdump" ] && ls "$folder"/lib/libnvrtc.so.* >/dev/null 2>&1; then
    say "$(cat "$folder/VERSION") (unpacked earlier in $folder)"
    echo "$folder"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1 || fail "apt-get and dpkg are needed (a Debian machine)"
work=$(mktemp -d) || fail "no temporary folder"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs" "$work/root"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$keyring" ] || fail "$keyring is missing (package debian-archive-keyring)"
cat > "$work/sources.list" <<EOF
deb [signed-by=$keyring] http://deb.debian.org/debian experimental non-free
deb [signed-by=$keyring] http://deb.debian.org/debian sid non-free
EOF
apt_options=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o Debug::NoLocking=1
    -o APT::Architecture=amd64 -o APT::Sandbox::User=root -o Acquire::Retries=3)
apt-get "${apt_options[@]}" -qq update >&2 || fail "apt-get update of Debian's experimental/sid non-free lists failed"

# The newest version of a package in the suite, from the lists just fetched ("" when the suite lacks it).
newest() { # package suite
    apt-cache "${apt_options[@]}" madison "$1" 2>/dev/null | awk -F'|' -v suite="$2" '$3 ~ suite {gsub(/ /, "", $2); print $2}' |
        sort -V | tail -n 1
}
# Package names carry the version (libnvrtc-builtins12.5), and experimental keeps only its newest upload.
builtins_package() { # suite
    apt-cache "${apt_options[@]}" pkgnames libnvrtc-builtins 2>/dev/null | sort -V | while read -r p; do
        [ -n "$(newest "$p" "$1")" ] && echo "$p"
    done | tail -n 1
}
suite=experimental
nvrtc_version=$(newest libnvrtc12 experimental)
builtins=$(builtins_package experimental)
if [ -z "$nvrtc_version" ] || [ -z "$builtins" ]; then
    suite=sid
    nvrtc_version=$(newest libnvrtc12 sid)
    builtins=$(builtins_package sid)
fi
[ -n "$nvrtc_version" ] && [ -n "$builtins" ] || fail "neither experimental nor sid non-free has libnvrtc12 and a libnvrtc-builtins package"
toolkit_version=$(newest nvidia-cuda-toolkit "$suite")
[ -n "$toolkit_version" ] || fail "$suite non-free has no nvidia-cuda-toolkit"
builtins_version=$(newest "$builtins" "$suite")
say "downloading from Debian $suite non-free: libnvrtc12 $nvrtc_version, $builtins $builtins_version, nvidia-cuda-toolkit $toolkit_version (~105 MB)"
(cd "$work/debs" && apt-get "${apt_options[@]}" -qq download "libnvrtc12=$nvrtc_version" "$builtins=$builtins_version" \
    "nvidia-cuda-toolkit=$toolkit_version") >&2 || fail "apt-get download failed"
for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$work/root" || fail "dpkg -x $deb failed"; done

staging="$folder.partial.$$"
rm -rf "$staging"
mkdir -p "$staging/lib" "$staging/bin" || fail "cannot create $staging"
cp -a "$work"/root/usr/lib/x86_64-linux-gnu/libnvrtc* "$staging/lib/" || fail "the packages hold no libnvrtc"
for tool in ptxas cuobjdump nvdisasm; do
    cp -a "$work/root/usr/bin/$tool" "$staging/bin/" || fail "the toolkit package holds no $tool"
done
cp -a "$work/root/usr/lib/nvidia-cuda-toolkit/compute-sanitizer" "$staging/" || fail "the toolkit package holds no compute-sanitizer"
"$staging/bin/cuobjdump" --version >/dev/null 2>&1 || fail "the unpacked cuobjdump does not run here"
echo "NVRTC ${nvrtc_version%%~*} (Debian $suite non-free: libnvrtc12 $nvrtc_version, $builtins $builtins_version, nvidia-cuda-toolkit $toolkit_version)" \
    > "$staging/VERSION"
# Replace an incomplete earlier folder only once the new one is whole.
rm -rf "$folder" && mkdir -p "$(dirname "$folder")" && mv "$staging" "$folder" || fail "cannot move the tools into $folder"
say "$(cat "$folder/VERSION") unpacked into $folder"
echo "$folder"
