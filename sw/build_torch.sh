#!/usr/bin/env bash
# Build PyTorch wheels for ARMv7l (PYNQ-Z2, Python 3.10) inside a Debian armhf chroot run by qemu-user.
#
# Stages (each idempotent; `--stage NAME` runs one, default runs all in order):
#   host     host prerequisites: qemu-user-static, debootstrap, binfmt_misc mounted, qemu-arm registered
#   chroot   debootstrap an armhf Debian chroot (marked as ours with a marker file)
#   mounts   mount proc, sys, dev, dev/pts into the chroot (released again on any exit)
#   deps     build dependencies inside the chroot (apt)
#   python   Python 3.10 via pyenv inside the chroot
#   source   PyTorch (and optionally vision/audio) source at the chosen tags, with submodules
#   build    `python setup.py bdist_wheel` with a CPU-only ARMv7 configuration
#   wheel    copy the wheels out of the chroot into --out
# `--run CMD` runs one shell command inside the chroot (with mounts) instead of stages.
#
# Nothing outside the chroot is modified or deleted, except: binfmt_misc is mounted / qemu-arm enabled
# (host stage) and wheels are copied into --out (wheel stage). Mounts made by this run are always released.
set -euo pipefail

readonly STAGES=(host chroot mounts deps python source build wheel)
readonly MARKER=".pynqtorch-chroot"
readonly STAMPS=".pynqtorch-stages"
readonly MOUNTS=(proc sys dev dev/pts)
# The Zynq-7000's Cortex-A9: NEON with VFPv3 (no VFPv4, so no fused multiply-add: VFMA would be SIGILL).
readonly CPU_FLAGS="-mcpu=cortex-a9 -mfpu=neon -mfloat-abi=hard"

CHROOT="${PWD}/armhf-chroot"
SUITE="bookworm"
MIRROR="http://deb.debian.org/debian"
TORCH_TAG="v2.13.0"
VISION_TAG=""
AUDIO_TAG=""
PYTHON_VERSION="3.10.16"
JOBS="$(nproc 2>/dev/null || echo 2)"
OUT="${PWD}/dist-armv7l"
DRY_RUN=0
ONLY_STAGE=""
RUN_CMD=""
MOUNTED=()

usage() {
    cat <<EOF
usage: build_torch.sh [options]
  --dry-run            print the plan (every stage and its commands) and change nothing
  --stage NAME         run one stage: ${STAGES[*]}
  --run CMD            run CMD (a shell command) inside the chroot with mounts, then release them
  --chroot DIR         chroot folder (default: ./armhf-chroot)
  --suite NAME         Debian suite (default: ${SUITE})
  --mirror URL         Debian mirror (default: ${MIRROR})
  --torch-tag TAG      PyTorch git tag (default: ${TORCH_TAG})
  --vision [TAG]       also build torchvision (default tag v0.28.0)
  --audio [TAG]        also build torchaudio (default tag v2.11.1, its last release; not paired with torch 2.13)
  --python VERSION     Python built by pyenv (default: ${PYTHON_VERSION})
  --jobs N             parallel compile jobs, MAX_JOBS (default: ${JOBS})
  --out DIR            where the wheel stage copies wheels (default: ./dist-armv7l)
  -h, --help           this help
EOF
}

die() { echo "build_torch.sh: error: $*" >&2; exit 2; }
say() { echo "[build_torch] $*"; }

# `run CMD...`: print the command; execute it unless --dry-run.
run() {
    printf '  $'; printf ' %q' "$@"; printf '\n'
    if (( ! DRY_RUN )); then "$@"; fi
}

# `in_chroot SCRIPT`: run a bash script inside the chroot with a clean environment.
in_chroot() {
    run chroot "$CHROOT" /usr/bin/env -i HOME=/root TERM="${TERM:-dumb}" LANG=C.UTF-8 \
        PATH=/opt/pyenv/shims:/opt/pyenv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        PYENV_ROOT=/opt/pyenv /bin/bash -euo pipefail -c "$1"
}

stamp_done() { (( ! DRY_RUN )) && [[ -f "$CHROOT/$STAMPS/$1" ]]; }
stamp() { run touch "$CHROOT/$STAMPS/$1"; }

is_ours() { [[ -f "$CHROOT/$MARKER" ]]; }

need_chroot() {
    if (( ! DRY_RUN )) && ! [[ -f "$CHROOT/etc/debian_version" ]]; then
        die "chroot $CHROOT is not set up yet; run the 'chroot' stage first"
    fi
}

# ---- mounts -------------------------------------------------------------------------------------------

mount_one() {
    local rel="$1" target="$CHROOT/$1" m
    for m in "${MOUNTED[@]}"; do [[ "$m" != "$target" ]] || return 0; done
    if (( ! DRY_RUN )) && mountpoint -q "$target"; then
        return
    fi
    case "$rel" in
        proc) run mount -t proc proc "$target" ;;
        sys) run mount -t sysfs sys "$target" ;;
        dev) run mount --bind /dev "$target" ;;
        dev/pts) run mount --bind /dev/pts "$target" ;;
    esac
    MOUNTED+=("$target")
}

ensure_mounts() {
    need_chroot
    local rel
    for rel in "${MOUNTS[@]}"; do mount_one "$rel"; done
}

# Unmount every mount point under the chroot this run made, innermost first.
release_mounts() {
    local i target
    for (( i=${#MOUNTED[@]}-1; i>=0; i-- )); do
        target="${MOUNTED[i]}"
        if (( DRY_RUN )); then
            printf '  $ umount %q\n' "$target"
        elif mountpoint -q "$target"; then
            umount "$target" 2>/dev/null || umount -l "$target" || echo "warning: could not unmount $target" >&2
        fi
    done
    MOUNTED=()
}

on_exit() {
    local rc=$?
    if (( ${#MOUNTED[@]} )); then
        say "releasing mounts"
        release_mounts
    fi
    exit "$rc"
}

# ---- stages -------------------------------------------------------------------------------------------

stage_host() {
    say "stage host: qemu-user-static, debootstrap, binfmt_misc with qemu-arm"
    local missing=() tool pkg
    for tool in debootstrap:debootstrap qemu-arm-static:qemu-user-static update-binfmts:binfmt-support \
                chroot:coreutils mountpoint:util-linux mount:mount; do
        if ! command -v "${tool%%:*}" >/dev/null 2>&1; then missing+=("${tool#*:}"); fi
    done
    if (( ${#missing[@]} )) && (( ! DRY_RUN )); then
        die "missing host tools; install them with: apt-get install -y ${missing[*]}"
    fi
    if (( DRY_RUN )) || ! mountpoint -q /proc/sys/fs/binfmt_misc; then
        if ! run mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; then
            die "binfmt_misc is unavailable (could not mount /proc/sys/fs/binfmt_misc); on a container, start it" \
                "with binfmt_misc available from the host kernel (e.g. docker --privileged) or load the module"
        fi
    fi
    if (( DRY_RUN )) || ! [[ -f /proc/sys/fs/binfmt_misc/qemu-arm ]]; then
        run update-binfmts --enable qemu-arm || die "could not register qemu-arm with binfmt_misc"
    fi
    if (( ! DRY_RUN )) && ! grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-arm; then
        die "binfmt_misc has qemu-arm registered but disabled; run: update-binfmts --enable qemu-arm"
    fi
}

stage_chroot() {
    say "stage chroot: debootstrap armhf Debian ${SUITE} into ${CHROOT}"
    if stamp_done chroot; then say "  already done"; return; fi
    run mkdir -p "$CHROOT"
    run touch "$CHROOT/$MARKER"
    run debootstrap --arch=armhf --variant=minbase --include=ca-certificates,python3 "$SUITE" "$CHROOT" "$MIRROR"
    run mkdir -p "$CHROOT/$STAMPS"
    stamp chroot
}

stage_mounts() {
    say "stage mounts: ${MOUNTS[*]} into ${CHROOT}"
    ensure_mounts
    local rel
    if (( ! DRY_RUN )); then
        for rel in "${MOUNTS[@]}"; do
            mountpoint -q "$CHROOT/$rel" || die "mount of $CHROOT/$rel failed"
        done
    fi
}

stage_deps() {
    say "stage deps: build dependencies (apt) inside the chroot"
    if stamp_done deps; then say "  already done"; return; fi
    ensure_mounts
    in_chroot "export DEBIAN_FRONTEND=noninteractive; apt-get update && apt-get install -y --no-install-recommends \
build-essential cmake ninja-build git curl ca-certificates pkg-config patchelf libopenblas-dev libssl-dev zlib1g-dev \
libbz2-dev libreadline-dev libsqlite3-dev libffi-dev liblzma-dev libncursesw5-dev tk-dev xz-utils libjpeg-dev libpng-dev"
    stamp deps
}

stage_python() {
    say "stage python: Python ${PYTHON_VERSION} via pyenv inside the chroot"
    if stamp_done python; then say "  already done"; return; fi
    ensure_mounts
    in_chroot "test -d /opt/pyenv || git clone --depth 1 https://github.com/pyenv/pyenv.git /opt/pyenv
pyenv install --skip-existing ${PYTHON_VERSION}
pyenv global ${PYTHON_VERSION}
python -m pip install --upgrade pip wheel setuptools"
    stamp python
}

# `checkout URL TAG DIR`: a shallow clone of TAG with submodules; re-running moves an existing clone to TAG.
checkout() {
    in_chroot "if [ -d $3/.git ]; then cd $3 && git fetch --depth 1 origin tag $2 && git checkout -f $2; \
else git clone --depth 1 --branch $2 $1 $3; fi
cd $3 && git submodule sync --recursive && git submodule update --init --recursive --depth 1"
}

stage_source() {
    say "stage source: PyTorch ${TORCH_TAG}${VISION_TAG:+, vision ${VISION_TAG}}${AUDIO_TAG:+, audio ${AUDIO_TAG}}"
    ensure_mounts
    checkout https://github.com/pytorch/pytorch.git "$TORCH_TAG" /src/pytorch
    if [[ -n "$VISION_TAG" ]]; then checkout https://github.com/pytorch/vision.git "$VISION_TAG" /src/vision; fi
    if [[ -n "$AUDIO_TAG" ]]; then checkout https://github.com/pytorch/audio.git "$AUDIO_TAG" /src/audio; fi
}

build_env() {
    echo "export MAX_JOBS=${JOBS} CMAKE_BUILD_PARALLEL_LEVEL=${JOBS} BUILD_TEST=0 USE_CUDA=0 USE_ROCM=0 \
USE_DISTRIBUTED=0 USE_MKLDNN=0 USE_NNPACK=0 USE_XNNPACK=1 USE_QNNPACK=1 USE_PYTORCH_QNNPACK=1 USE_FBGEMM=0 \
USE_KINETO=0 USE_OPENMP=1 USE_NUMPY=1 USE_NINJA=1 BLAS=OpenBLAS PYTORCH_BUILD_VERSION=${TORCH_TAG#v} \
PYTORCH_BUILD_NUMBER=1 CFLAGS='${CPU_FLAGS}' CXXFLAGS='${CPU_FLAGS}'"
}

stage_build() {
    say "stage build: bdist_wheel (MAX_JOBS=${JOBS}, CPU only)"
    ensure_mounts
    in_chroot "$(build_env)
cd /src/pytorch && python -m pip install -r requirements.txt && python setup.py bdist_wheel"
    if [[ -n "$VISION_TAG" || -n "$AUDIO_TAG" ]]; then
        in_chroot "python -m pip install --force-reinstall --no-deps /src/pytorch/dist/torch-*.whl"
    fi
    if [[ -n "$VISION_TAG" ]]; then
        in_chroot "$(build_env)
cd /src/vision && BUILD_VERSION=${VISION_TAG#v} python setup.py bdist_wheel"
    fi
    if [[ -n "$AUDIO_TAG" ]]; then
        in_chroot "$(build_env)
cd /src/audio && BUILD_VERSION=${AUDIO_TAG#v} USE_FFMPEG=0 python setup.py bdist_wheel"
    fi
}

stage_wheel() {
    say "stage wheel: copy wheels to ${OUT}"
    need_chroot
    run mkdir -p "$OUT"
    local dir
    for dir in pytorch ${VISION_TAG:+vision} ${AUDIO_TAG:+audio}; do
        if (( ! DRY_RUN )) && ! compgen -G "$CHROOT/src/$dir/dist/*.whl" >/dev/null; then
            die "no wheel in $CHROOT/src/$dir/dist; run the 'build' stage first"
        fi
        run cp -v "$CHROOT/src/$dir/dist/"*.whl "$OUT/"
    done
}

# ---- main ---------------------------------------------------------------------------------------------

parse_args() {
    while (( $# )); do
        case "$1" in
            --dry-run) DRY_RUN=1 ;;
            --stage) ONLY_STAGE="${2:?--stage needs a name}"; shift ;;
            --run) RUN_CMD="${2:?--run needs a command}"; shift ;;
            --chroot) CHROOT="${2:?--chroot needs a folder}"; shift ;;
            --suite) SUITE="${2:?--suite needs a name}"; shift ;;
            --mirror) MIRROR="${2:?--mirror needs a URL}"; shift ;;
            --torch-tag) TORCH_TAG="${2:?--torch-tag needs a tag}"; shift ;;
            --vision) if [[ "${2:-}" == v* ]]; then VISION_TAG="$2"; shift; else VISION_TAG="v0.28.0"; fi ;;
            --audio) if [[ "${2:-}" == v* ]]; then AUDIO_TAG="$2"; shift; else AUDIO_TAG="v2.11.1"; fi ;;
            --python) PYTHON_VERSION="${2:?--python needs a version}"; shift ;;
            --jobs) JOBS="${2:?--jobs needs a number}"; shift ;;
            --out) OUT="${2:?--out needs a folder}"; shift ;;
            -h|--help) usage; exit 0 ;;
            *) usage >&2; die "unknown option: $1" ;;
        esac
        shift
    done
}

validate() {
    [[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a positive integer, got '$JOBS'"
    [[ "$PYTHON_VERSION" =~ ^3\.10(\.[0-9]+)?$ ]] || die "--python must be a 3.10 version (the board's), got '$PYTHON_VERSION'"
    local tag
    for tag in "$TORCH_TAG" "$VISION_TAG" "$AUDIO_TAG"; do
        [[ -z "$tag" || "$tag" =~ ^v[0-9A-Za-z.+_-]+$ ]] || die "bad git tag '$tag' (expected e.g. v2.13.0)"
    done
    if [[ -n "$ONLY_STAGE" && -n "$RUN_CMD" ]]; then die "--stage and --run cannot be combined"; fi
    if [[ -n "$ONLY_STAGE" && " ${STAGES[*]} " != *" $ONLY_STAGE "* ]]; then
        die "unknown stage '$ONLY_STAGE'; stages are: ${STAGES[*]}"
    fi
    [[ -n "$CHROOT" ]] || die "--chroot must not be empty"
    CHROOT="$(realpath -m -- "$CHROOT")"
    OUT="$(realpath -m -- "$OUT")"
    [[ "$CHROOT" != "/" ]] || die "--chroot must not be /"
    if [[ -e "$CHROOT" && ! -d "$CHROOT" ]]; then die "--chroot $CHROOT exists and is not a folder"; fi
    if [[ -d "$CHROOT" ]] && ! is_ours && [[ -n "$(ls -A -- "$CHROOT")" ]]; then
        die "--chroot $CHROOT exists, is not empty and has no $MARKER marker: refusing to use a folder this script did not create"
    fi
    if (( ! DRY_RUN )) && [[ "$(id -u)" != 0 ]]; then
        die "must run as root (debootstrap, chroot and mount need it); use --dry-run to see the plan"
    fi
}

main() {
    parse_args "$@"
    validate
    trap on_exit EXIT
    trap 'exit 130' INT TERM
    (( DRY_RUN )) && say "dry run: nothing is changed; plan for chroot $CHROOT"
    if [[ -n "$RUN_CMD" ]]; then
        is_ours || (( DRY_RUN )) || die "chroot $CHROOT was not created by this script (no $MARKER); run the 'chroot' stage first"
        ensure_mounts
        in_chroot "$RUN_CMD"
        return
    fi
    local stage
    for stage in "${STAGES[@]}"; do
        if [[ -z "$ONLY_STAGE" || "$stage" == "$ONLY_STAGE" ]]; then "stage_$stage"; fi
    done
    say "done"
}

main "$@"
