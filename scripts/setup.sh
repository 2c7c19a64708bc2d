# Sourced by scripts/check and scripts/test: installs what fifolab needs, once.
#  - Debian packages (apt-get; as root, or through sudo)
#  - a Python virtual environment in .venv with fifolab and its test tools
set -euo pipefail
FIFOLAB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
APT_PACKAGES=(qemu-system-x86 qemu-guest-agent linux-headers-amd64 busybox-static gcc make
              libc6-dev libaio-dev liburing-dev python3 python3-venv kmod xz-utils
              linux-source-6.1 bc bison flex libssl-dev libelf-dev
              sparse)   # sparse: the driver's C=1 build (tests/test_driver_lint.py)

missing=()
for p in "${APT_PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "fifolab setup: installing Debian packages: ${missing[*]}" >&2
	SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
	$SUDO apt-get update -q
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

VENV=$FIFOLAB_ROOT/.venv
stamp=$(sha256sum "$FIFOLAB_ROOT/pyproject.toml" | cut -c1-16)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.fifolab-stamp" 2>/dev/null)" != "$stamp" ]; then
	echo "fifolab setup: creating the virtual environment in $VENV" >&2
	python3 -m venv "$VENV"
	"$VENV/bin/pip" install -q --disable-pip-version-check -e "$FIFOLAB_ROOT[test]"
	echo "$stamp" > "$VENV/.fifolab-stamp"
fi
export PATH=$VENV/bin:$PATH
