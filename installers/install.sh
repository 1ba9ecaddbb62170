#!/bin/sh
# Install (or upgrade in place) compass-bridge for the current user on macOS or Linux, then register it with
# the browsers and Claude Code (`compass-bridge install`).
#
#   sh install.sh [--from PATH_OR_SPEC] [--method uv|pipx|venv] [--uninstall] [-- compass-bridge install options]
#
# The package goes into an isolated environment: `uv tool` or `pipx` when one is on PATH, else a virtualenv
# in the user's data dir. Any option this script does not know is passed on to `compass-bridge install`
# (e.g. --browser chromium --client cursor). Running it again upgrades in place. See docs/INSTALL.md.
set -eu

PACKAGE="compass-bridge"
source_spec="$PACKAGE"
method=""
uninstall=0

say() { printf '%s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --from) [ $# -ge 2 ] || die "--from needs a path (a checkout) or a package spec"; source_spec=$2; shift 2 ;;
        --from=*) source_spec=${1#--from=}; shift ;;
        --method) [ $# -ge 2 ] || die "--method needs uv, pipx or venv"; method=$2; shift 2 ;;
        --method=*) method=${1#--method=}; shift ;;
        --uninstall) uninstall=1; shift ;;
        -h|--help) usage 0 ;;
        --) shift; break ;;
        *) break ;;
    esac
done

case "$(uname -s)" in
    Darwin) data_home="$HOME/Library/Application Support" ;;
    *) data_home="${XDG_DATA_HOME:-$HOME/.local/share}" ;;
esac
data_dir="$data_home/compass-bridge"
venv="$data_dir/venv"
bin_dir="$HOME/.local/bin"

# A checkout given as a relative path must survive the `cd` that pip and uv do.
if [ -d "$source_spec" ]; then
    source_spec=$(cd "$source_spec" && pwd)
fi

if [ -z "$method" ]; then
    if command -v uv >/dev/null 2>&1; then method=uv
    elif command -v pipx >/dev/null 2>&1; then method=pipx
    else method=venv
    fi
fi

find_python() {
    for candidate in ${PYTHON:-} python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

case "$method" in
    uv) command -v uv >/dev/null 2>&1 || die "--method uv, but uv is not on PATH"
        bin_dir=$(uv tool dir --bin)
        exe="$bin_dir/compass-bridge" ;;
    pipx) command -v pipx >/dev/null 2>&1 || die "--method pipx, but pipx is not on PATH"
        bin_dir="${PIPX_BIN_DIR:-$bin_dir}"
        exe="$bin_dir/compass-bridge" ;;
    venv) exe="$venv/bin/compass-bridge" ;;  # linked into $bin_dir below
    *) die "unknown --method '$method': use uv, pipx or venv" ;;
esac

if [ "$uninstall" = 1 ]; then
    # Undo compass-bridge install first (it needs the package), then remove the package itself.
    if [ -x "$exe" ]; then
        "$exe" uninstall "$@"
    fi
    case "$method" in
        uv) uv tool uninstall "$PACKAGE" ;;
        pipx) pipx uninstall "$PACKAGE" ;;
        venv) rm -rf "$venv"
            if [ -L "$bin_dir/compass-bridge" ] && [ "$(readlink "$bin_dir/compass-bridge")" = "$exe" ]; then
                rm -f "$bin_dir/compass-bridge"
            fi ;;
    esac
    say "compass-bridge is uninstalled. Its keys, usage log and settings stay in $data_dir; delete that to forget them."
    exit 0
fi

say "Installing $PACKAGE from $source_spec with $method"
case "$method" in
    uv) uv tool install --force --reinstall "$source_spec" ;;
    pipx) pipx install --force "$source_spec" ;;
    venv)
        python=$(find_python) || die "no Python 3.11 or newer found; install one (or set PYTHON=/path/to/python3.11+)"
        # The data dir also holds the key store: private from the start (compass-bridge refuses it otherwise).
        (umask 077 && mkdir -p "$data_dir")
        if [ ! -x "$venv/bin/python" ]; then
            "$python" -m venv "$venv" || die "could not create a virtualenv with $python (on Debian/Ubuntu: apt install python3-venv)"
        fi
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$source_spec"
        mkdir -p "$bin_dir"
        ln -sf "$exe" "$bin_dir/compass-bridge"
        ;;
esac

[ -x "$exe" ] || die "the installation did not produce $exe"
"$exe" --version

# Register with the browsers and MCP clients; everything after the installer's own options goes along.
"$exe" install "$@"

case ":$PATH:" in
    *":$bin_dir:"*) ;;
    *) say ""
       say "compass-bridge is in $bin_dir, which is not on your PATH. Add it, e.g.:"
       say "    echo 'export PATH=\"$bin_dir:\$PATH\"' >> ~/.profile"
       ;;
esac
say "Check everything with: compass-bridge doctor"
