#!/usr/bin/env bash
# Builds the default model's pretraining corpus from Debian source packages of
# permissively licensed projects, keeping Python and C sources, deduplicated,
# with every SVEN function and sec_eval / unit_test scenario excluded, split into
# train and held-out sets, then trains the tokenizer and packs both sets.
#
#   scripts/build-corpus.sh OUT_DIR [SHARED_DATASETS_DIR]   (as root: it adds a deb-src entry and runs apt-get)
#
# Re-runnable: downloads and extractions already present are kept.
set -euo pipefail
out=$(realpath -m "${1:?usage: scripts/build-corpus.sh OUT_DIR [SHARED_DATASETS_DIR]}")
here=$(cd "$(dirname "$0")/.." && pwd)
datasets=${2:-$here/../shared/datasets}
cli="node $here/dist/lib/cli/main.js"
seq_len=${SEQ_LEN:-512}
vocab=${VOCAB:-8192}

# Debian source package, SPDX licence of the upstream project. (flask, requests,
# werkzeug and click are in the index too, but their upstream tarballs answer 404
# on the mirror reachable here; a package that fails is skipped with a message.)
packages=(
  "python3.11 PSF-2.0" "python-django BSD-3-Clause" "jinja2 BSD-3-Clause"
  "sqlite3 blessing" "zlib Zlib" "curl curl" "libuv1 MIT" "lua5.4 MIT" "redis BSD-3-Clause" "jq MIT"
)

if ! grep -rqs "^Types: deb-src" /etc/apt/sources.list.d/ && ! grep -qs "^deb-src" /etc/apt/sources.list; then
  printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    > /etc/apt/sources.list.d/deepguard-src.sources
fi
apt-get update -qq

mkdir -p "$out/downloads" "$out/src"
sources=()
for entry in "${packages[@]}"; do
  read -r pkg license <<<"$entry"
  dest="$out/src/$pkg"
  if [ ! -d "$dest" ]; then
    (cd "$out/downloads" && apt-get source --download-only -qq "$pkg" >/dev/null 2>&1) || { echo "skipping $pkg: apt-get source failed" >&2; continue; }
    tarball=$(ls "$out/downloads/${pkg}_"*.orig.tar.* 2>/dev/null | head -n 1)
    [ -n "$tarball" ] || { echo "skipping $pkg: no upstream tarball" >&2; continue; }
    mkdir -p "$dest.tmp" && tar -xf "$tarball" -C "$dest.tmp" --strip-components=1 && mv "$dest.tmp" "$dest"
  fi
  sources+=(--source "$pkg=$dest:$license")
done

$cli corpus build "${sources[@]}" --out "$out/corpus" --ext .py,.c,.h \
  --exclude "$datasets/sven" --exclude "$datasets/sec_eval" --exclude "$datasets/unit_test"
$cli tokenizer train --corpus "$out/corpus/train.jsonl" --vocab "$vocab" --out "$out/tokenizer"
$cli corpus pack --corpus "$out/corpus/train.jsonl" --tokenizer "$out/tokenizer" --seq-len "$seq_len" --out "$out/train.safetensors"
$cli corpus pack --corpus "$out/corpus/heldout.jsonl" --tokenizer "$out/tokenizer" --seq-len "$seq_len" --out "$out/heldout.safetensors"
