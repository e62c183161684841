#!/bin/sh
# Installs kubox as a systemd service, the way k3s's install.sh does.
#
#   curl -sfL https://…/install.sh | sh -                                    # a server
#   curl -sfL https://…/install.sh | KUBOX_URL=https://SERVER:6443 KUBOX_TOKEN=… sh -   # an agent
#   curl -sfL https://…/install.sh | sh -s - server --tls-san my.host        # with flags
#   INSTALL_KUBOX_SKIP_DOWNLOAD=true ./install.sh      # offline, from the airgap tarball
#
# Arguments (or INSTALL_KUBOX_EXEC, placed before them) are the command line of the service:
# `server` or `agent` and their flags; flags alone mean `server`, or `agent` when KUBOX_URL is
# set. Environment:
#   INSTALL_KUBOX_VERSION        release to download (default: the latest)
#   INSTALL_KUBOX_DOWNLOAD_URL   base URL of the release artifacts kubox-<arch> and
#                                sha256sum-<arch>.txt (default: GitHub releases of kubox)
#   INSTALL_KUBOX_SKIP_DOWNLOAD  true: download nothing; use kubox-<arch> (or kubox) next to
#                                this script, else the kubox already in the bin dir
#   INSTALL_KUBOX_BIN_DIR        kubox, the kubectl link and the uninstall script (/usr/local/bin)
#   INSTALL_KUBOX_SYSTEMD_DIR    the unit and its env file (/etc/systemd/system)
#   INSTALL_KUBOX_CONFIG_DIR     kubox's config dir, removed on uninstall (/etc/kubox)
#   INSTALL_KUBOX_SKIP_ENABLE    true: do not enable (nor start) the service
#   INSTALL_KUBOX_SKIP_START     true: do not start the service
#   INSTALL_KUBOX_SYMLINK        skip: no kubectl link; force: replace an existing kubectl
#   KUBOX_URL, KUBOX_TOKEN       join a server as an agent (the token goes to the env file,
#                                mode 0600, never into the unit)
#   KUBOX_*, CONTAINERD_*, proxy variables are kept in the env file for the service;
#   KUBOX_DATA_DIR (/var/lib/kubox) and KUBOX_RUN_DIR (/run/kubox) also tell the installer
#   where airgap images go and what the uninstall script removes.
set -e
set -o noglob

GITHUB_URL=https://github.com/kubox-dev/kubox/releases

info() { echo "[INFO]  $*"; }
fatal() {
    echo "[ERROR] $*" >&2
    exit 1
}

# --- the service's command line: arguments of a unit's ExecStart, double-quoted for systemd
# (which also expands $ and % there, hence $$ and %%) ---
systemd_quote() {
    printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/\$/$$/g' -e 's/%/%%/g')"
}

setup_env() {
    case "$1" in
    -* | "")
        if [ -n "${KUBOX_URL}" ]; then CMD=agent; else CMD=server; fi
        ;;
    *)
        CMD=$1
        shift
        ;;
    esac
    case "${CMD}" in
    server | agent) ;;
    *) fatal "The command must be server or agent, not '${CMD}'." ;;
    esac
    if [ "${CMD}" = agent ]; then
        case "${KUBOX_URL}" in
        https://*) ;;
        "") ;;
        *) fatal "KUBOX_URL must be an https:// URL (it is '${KUBOX_URL}')." ;;
        esac
        if [ -z "${KUBOX_TOKEN}" ] && [ -z "${KUBOX_TOKEN_FILE}" ]; then
            case " $* " in
            *" --token"* | *" -t "*) ;;
            *) fatal "An agent needs the server's join token: set KUBOX_TOKEN (the server's /var/lib/kubox/server/token)." ;;
            esac
        fi
    fi
    EXEC_ARGS=""
    for arg in "$@"; do
        EXEC_ARGS="${EXEC_ARGS} $(systemd_quote "$arg")"
    done
    WANTS_AGENT=true
    case " $* " in *" --disable-agent"*) [ "${CMD}" = server ] && WANTS_AGENT=false ;; esac

    if [ "${CMD}" = server ]; then SYSTEM_NAME=kubox; else SYSTEM_NAME=kubox-agent; fi
    BIN_DIR=${INSTALL_KUBOX_BIN_DIR:-/usr/local/bin}
    SYSTEMD_DIR=${INSTALL_KUBOX_SYSTEMD_DIR:-/etc/systemd/system}
    CONFIG_DIR=${INSTALL_KUBOX_CONFIG_DIR:-/etc/kubox}
    DATA_DIR=${KUBOX_DATA_DIR:-/var/lib/kubox}
    RUN_DIR=${KUBOX_RUN_DIR:-/run/kubox}
    FILE_SERVICE=${SYSTEMD_DIR}/${SYSTEM_NAME}.service
    FILE_ENV=${SYSTEMD_DIR}/${SYSTEM_NAME}.service.env
    UNINSTALL_SH=${BIN_DIR}/${SYSTEM_NAME}-uninstall.sh
    # Where an airgap tarball was unpacked (nothing when the script comes through a pipe).
    SCRIPT_DIR=
    if [ -f "$0" ]; then SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd); fi
    [ "$(id -u)" -eq 0 ] || fatal "The installer must run as root (kubox manages containerd, the network and systemd units); run it with sudo."
}

setup_arch() {
    ARCH=${ARCH:-$(uname -m)}
    case "${ARCH}" in
    amd64 | x86_64) ARCH=amd64 ;;
    arm64 | aarch64) ARCH=arm64 ;;
    arm*) ARCH=arm ;;
    *) fatal "kubox has no release for the ${ARCH} architecture (only amd64, arm64 and arm)." ;;
    esac
}

setup_tmp() {
    TMP_DIR=$(mktemp -d -t kubox-install.XXXXXXXX)
    cleanup() {
        code=$?
        set +e
        trap - EXIT
        rm -rf "${TMP_DIR}"
        exit $code
    }
    trap cleanup INT EXIT
}

download() {
    if command -v curl >/dev/null 2>&1; then
        curl -sfL -o "$1" "$2" || fatal "Downloading $2 failed."
    elif command -v wget >/dev/null 2>&1; then
        wget -qO "$1" "$2" || fatal "Downloading $2 failed."
    else
        fatal "Neither curl nor wget is installed; install one of them, or use the airgap tarball with INSTALL_KUBOX_SKIP_DOWNLOAD=true."
    fi
}

# --- $1: the binary, $2: its sha256sum-<arch>.txt; fatal unless they agree ---
verify_checksum() {
    expected=$(grep " \*\{0,1\}kubox-${ARCH}\$" "$2" | head -n 1 | cut -d ' ' -f 1)
    [ -n "${expected}" ] || fatal "$(basename "$2") holds no checksum for kubox-${ARCH}; nothing was installed."
    actual=$(sha256sum "$1" | cut -d ' ' -f 1)
    [ "${expected}" = "${actual}" ] ||
        fatal "The kubox-${ARCH} binary does not match its checksum in $(basename "$2") (expected ${expected}, got ${actual}), so nothing was installed."
}

install_binary() {
    mkdir -p "${BIN_DIR}"
    cp "$1" "${BIN_DIR}/.kubox.new"
    chmod 755 "${BIN_DIR}/.kubox.new"
    mv -f "${BIN_DIR}/.kubox.new" "${BIN_DIR}/kubox"
    info "Installed ${BIN_DIR}/kubox"
}

download_and_verify() {
    setup_arch
    if [ "${INSTALL_KUBOX_SKIP_DOWNLOAD}" = true ]; then
        for bin in "${SCRIPT_DIR}/kubox-${ARCH}" "${SCRIPT_DIR}/kubox"; do
            if [ -n "${SCRIPT_DIR}" ] && [ -f "${bin}" ]; then
                [ -f "${SCRIPT_DIR}/sha256sum-${ARCH}.txt" ] && verify_checksum "${bin}" "${SCRIPT_DIR}/sha256sum-${ARCH}.txt"
                install_binary "${bin}"
                return
            fi
        done
        [ -x "${BIN_DIR}/kubox" ] || fatal "INSTALL_KUBOX_SKIP_DOWNLOAD is set but there is no kubox next to this script nor in ${BIN_DIR}; put the binary there first."
        info "Using the kubox already in ${BIN_DIR}"
        return
    fi
    if [ -n "${INSTALL_KUBOX_DOWNLOAD_URL}" ]; then
        url=${INSTALL_KUBOX_DOWNLOAD_URL%/}
    elif [ -n "${INSTALL_KUBOX_VERSION}" ]; then
        url=${GITHUB_URL}/download/${INSTALL_KUBOX_VERSION}
    else
        url=${GITHUB_URL}/latest/download
    fi
    setup_tmp
    info "Downloading ${url}/kubox-${ARCH}"
    download "${TMP_DIR}/sha256sum-${ARCH}.txt" "${url}/sha256sum-${ARCH}.txt"
    download "${TMP_DIR}/kubox-${ARCH}" "${url}/kubox-${ARCH}"
    verify_checksum "${TMP_DIR}/kubox-${ARCH}" "${TMP_DIR}/sha256sum-${ARCH}.txt"
    install_binary "${TMP_DIR}/kubox-${ARCH}"
}

# --- containerd and runc (kubox supervises the system's) and nft (the Service proxy, network
# policies): from the airgap tarball's bin/, else the package manager, else stop. Checked
# before anything is written. ---
package_manager() {
    for pm in apt-get dnf yum apk; do
        if command -v "${pm}" >/dev/null 2>&1; then
            echo "${pm}"
            return
        fi
    done
}

check_prerequisites() {
    FROM_TARBALL=
    PKGS=
    [ "${WANTS_AGENT}" = true ] || return 0
    missing=
    for cmd in containerd containerd-shim-runc-v2 runc nft; do
        command -v "${cmd}" >/dev/null 2>&1 && continue
        if [ -n "${SCRIPT_DIR}" ] && [ -x "${SCRIPT_DIR}/bin/${cmd}" ]; then
            FROM_TARBALL="${FROM_TARBALL} ${cmd}"
            continue
        fi
        missing="${missing} ${cmd}"
        case "${cmd}" in
        containerd | containerd-shim-runc-v2) pkg=containerd ;;
        nft) pkg=nftables ;;
        *) pkg=${cmd} ;;
        esac
        case " ${PKGS} " in *" ${pkg} "*) ;; *) PKGS="${PKGS} ${pkg}" ;; esac
    done
    [ -n "${missing}" ] || return 0
    if [ "${INSTALL_KUBOX_SKIP_DOWNLOAD}" = true ] || [ -z "$(package_manager)" ]; then
        fatal "kubox needs${missing} on PATH: install the package(s)${PKGS} and run this again."
    fi
}

install_prerequisites() {
    for cmd in ${FROM_TARBALL}; do
        cp "${SCRIPT_DIR}/bin/${cmd}" "${BIN_DIR}/${cmd}"
        chmod 755 "${BIN_DIR}/${cmd}"
        info "Installed ${BIN_DIR}/${cmd} from the airgap tarball"
    done
    [ -n "${PKGS}" ] || return 0
    info "Installing${PKGS}"
    # shellcheck disable=SC2086
    case "$(package_manager)" in
    apt-get) apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${PKGS} >/dev/null ;;
    dnf) dnf install -y -q ${PKGS} ;;
    yum) yum install -y -q ${PKGS} ;;
    apk) apk add --no-cache ${PKGS} ;;
    esac || fatal "Installing${PKGS} with $(package_manager) failed; install them and run this again."
}

# --- images of the airgap tarball, imported by the agent at start ---
install_images() {
    [ -n "${SCRIPT_DIR}" ] && [ -d "${SCRIPT_DIR}/images" ] || return 0
    set +o noglob
    for image in "${SCRIPT_DIR}"/images/*; do
        [ -f "${image}" ] || continue
        mkdir -p "${DATA_DIR}/agent/images"
        cp "${image}" "${DATA_DIR}/agent/images/"
        info "Copied $(basename "${image}") to ${DATA_DIR}/agent/images"
    done
    set -o noglob
}

create_symlinks() {
    [ "${INSTALL_KUBOX_SYMLINK}" = skip ] && return 0
    if [ -e "${BIN_DIR}/kubectl" ] && [ "${INSTALL_KUBOX_SYMLINK}" != force ]; then
        info "Skipping ${BIN_DIR}/kubectl symlink to kubox, it already exists"
        return 0
    fi
    which_kubectl=$(command -v kubectl 2>/dev/null || true)
    if [ -n "${which_kubectl}" ] && [ "${INSTALL_KUBOX_SYMLINK}" != force ]; then
        info "Skipping ${BIN_DIR}/kubectl symlink to kubox, kubectl is on PATH at ${which_kubectl}"
        return 0
    fi
    ln -sf kubox "${BIN_DIR}/kubectl"
    info "Created ${BIN_DIR}/kubectl symlink to kubox (it runs the kubectl found later on PATH with kubox's admin kubeconfig)"
}

create_uninstall() {
    remove_data=false
    [ "${CMD}" = server ] && remove_data=true
    cat >"${UNINSTALL_SH}" <<EOF
#!/bin/sh
# Uninstalls ${SYSTEM_NAME}, written by kubox's install.sh. Set KUBOX_UNINSTALL_KEEP_DATA=true
# to keep a server's data (${DATA_DIR}, ${CONFIG_DIR}).
set -e
[ "\$(id -u)" -eq 0 ] || exec sudo "\$0" "\$@"
UNIT=${SYSTEM_NAME}.service
RUN_DIR='${RUN_DIR}'
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    # The unit keeps containerd and its shims when kubox stops (KillMode=process); end the
    # containers through containerd, then everything left in the unit's cgroup.
    if command -v ctr >/dev/null 2>&1 && [ -S "\${RUN_DIR}/containerd/containerd.sock" ]; then
        for task in \$(ctr -a "\${RUN_DIR}/containerd/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null); do
            ctr -a "\${RUN_DIR}/containerd/containerd.sock" -n k8s.io tasks kill -s SIGKILL "\${task}" 2>/dev/null || true
        done
    fi
    systemctl kill --kill-whom=all --signal=SIGKILL "\${UNIT}" 2>/dev/null || true
    systemctl stop "\${UNIT}" 2>/dev/null || true
    systemctl disable "\${UNIT}" 2>/dev/null || true
    systemctl reset-failed "\${UNIT}" 2>/dev/null || true
else
    echo "systemd is not running here: stop kubox yourself if you started it by hand."
fi
rm -f '${FILE_SERVICE}' '${FILE_ENV}'
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload || true
fi
if [ -L '${BIN_DIR}/kubectl' ] && [ "\$(readlink '${BIN_DIR}/kubectl')" = kubox ]; then
    rm -f '${BIN_DIR}/kubectl'
fi
# Unmounts what containerd left below \$1 (deepest first), then removes it.
remove_dir() {
    [ -e "\$1" ] || return 0
    while read -r _ mnt _; do
        case "\${mnt}" in "\$1" | "\$1"/*) echo "\${mnt}" ;; esac
    done </proc/self/mounts | sort -r | while read -r mnt; do umount -l "\${mnt}" || true; done
    rm -rf "\$1"
}
remove_dir "\${RUN_DIR}"
if [ ${remove_data} = true ] && [ "\${KUBOX_UNINSTALL_KEEP_DATA}" != true ]; then
    remove_dir '${DATA_DIR}'
    remove_dir '${CONFIG_DIR}'
fi
if command -v nft >/dev/null 2>&1; then
    nft list tables 2>/dev/null | while read -r _ family table; do
        case "\${table}" in kubox-*) nft delete table "\${family}" "\${table}" || true ;; esac
    done
fi
ip link delete cni0 2>/dev/null || true
# Another kubox unit on this machine still needs the binary.
for other in '${SYSTEMD_DIR}'/kubox.service '${SYSTEMD_DIR}'/kubox-agent.service; do
    if [ -e "\${other}" ]; then
        rm -f "\$0"
        exit 0
    fi
done
rm -f '${BIN_DIR}/kubox'
rm -f "\$0"
echo "kubox is uninstalled."
EOF
    chmod 755 "${UNINSTALL_SH}"
    info "Created uninstall script ${UNINSTALL_SH}"
}

# --- KUBOX_*/CONTAINERD_* and proxy variables of this environment, for the service only ---
create_env_file() {
    mkdir -p "${SYSTEMD_DIR}"
    (
        umask 077
        env | grep -E '^(KUBOX|CONTAINERD)_|^(NO|HTTP|HTTPS)_PROXY=|^(no|http|https)_proxy=' >"${FILE_ENV}" || true
    )
    chmod 600 "${FILE_ENV}"
    info "Created environment file ${FILE_ENV}"
}

# The unit; packaging/kubox.service and packaging/kubox-agent.service are this with the default
# directories (a test keeps them in step).
create_service_file() {
    cat >"${FILE_SERVICE}" <<EOF
[Unit]
Description=kubox, a small Kubernetes distribution (${CMD})
Documentation=https://github.com/kubox-dev/kubox
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=notify
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-${FILE_ENV}
# Restarting or stopping kubox must not stop the containers it runs: only kubox itself is
# signalled, and containerd with its shims stays in this unit's cgroup tree.
KillMode=process
Delegate=yes
User=root
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStartPre=-/sbin/modprobe vxlan
ExecStart=${BIN_DIR}/kubox ${CMD}${EXEC_ARGS}
EOF
    chmod 644 "${FILE_SERVICE}"
    info "Created systemd unit ${FILE_SERVICE}"
}

enable_and_start() {
    if [ ! -d /run/systemd/system ] || ! command -v systemctl >/dev/null 2>&1; then
        info "systemd is not running on this machine, so ${SYSTEM_NAME}.service was written but not started; start kubox by hand with: ${BIN_DIR}/kubox ${CMD}${EXEC_ARGS}"
        return 0
    fi
    if [ "${INSTALL_KUBOX_SKIP_ENABLE}" = true ]; then
        info "Not enabling ${SYSTEM_NAME} (INSTALL_KUBOX_SKIP_ENABLE)"
        return 0
    fi
    systemctl daemon-reload
    systemctl enable "${FILE_SERVICE}" >/dev/null
    info "Enabled ${SYSTEM_NAME}"
    if [ "${INSTALL_KUBOX_SKIP_START}" = true ]; then
        info "Not starting ${SYSTEM_NAME} (INSTALL_KUBOX_SKIP_START)"
        return 0
    fi
    info "Starting ${SYSTEM_NAME}"
    systemctl restart "${SYSTEM_NAME}"
}

# --- INSTALL_KUBOX_EXEC comes before the script's arguments ---
if [ -n "${INSTALL_KUBOX_EXEC}" ]; then
    # shellcheck disable=SC2086
    set -- ${INSTALL_KUBOX_EXEC} "$@"
fi
{
    setup_env "$@"
    check_prerequisites
    download_and_verify
    install_prerequisites
    install_images
    create_symlinks
    create_uninstall
    create_env_file
    create_service_file
    enable_and_start
}
