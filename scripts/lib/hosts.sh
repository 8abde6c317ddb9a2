# Test hosts on one machine: two network namespaces joined by a veth pair (sourced by demo.sh and the benchmarks).
#   make_hosts SRC_NS TGT_NS SRC_IF TGT_IF SUBNET   (SUBNET like 10.240.0: SRC gets .1, TGT .2, /24)
#   del_hosts SRC_NS TGT_NS                         (removing a namespace removes its veth end, and the peer)
make_hosts() {
  local src=$1 tgt=$2 sif=$3 tif=$4 net=$5
  ip netns add "$src"
  ip netns add "$tgt"
  ip link add "$sif" type veth peer name "$tif"
  ip link set "$sif" netns "$src"
  ip link set "$tif" netns "$tgt"
  ip -n "$src" addr add "$net.1/24" dev "$sif"
  ip -n "$tgt" addr add "$net.2/24" dev "$tif"
  ip -n "$src" link set lo up
  ip -n "$tgt" link set lo up
  ip -n "$src" link set "$sif" up
  ip -n "$tgt" link set "$tif" up
}

del_hosts() {
  ip netns del "$1" 2>/dev/null
  ip netns del "$2" 2>/dev/null
  return 0
}

# Three hosts on one switch, as tests/Integration.Tests/Hosts/TestHosts.cs builds them: a bridge in namespace SW
# joins SRC, TGT and CLI, each with one veth on the link (SRC_IF, TGT_IF, CLI_IF) and address .1, .2, .3 of NET/24.
#   make_switched_hosts SW SRC TGT CLI SRC_IF TGT_IF CLI_IF NET
#   del_switched_hosts SW SRC TGT CLI
make_switched_hosts() {
  local sw=$1 net=$8 n=1 ns dev
  ip netns add "$sw"
  ip -n "$sw" link add name br0 type bridge
  ip -n "$sw" link set br0 up
  for pair in "$2:$5" "$3:$6" "$4:$7"; do
    ns=${pair%%:*} dev=${pair#*:}
    ip netns add "$ns"
    ip link add name "$dev" type veth peer name "b$n$dev"
    ip link set "$dev" netns "$ns"
    ip link set "b$n$dev" netns "$sw"
    ip -n "$sw" link set "b$n$dev" master br0
    ip -n "$sw" link set "b$n$dev" up
    ip -n "$ns" addr add "$net.$n/24" dev "$dev"
    ip -n "$ns" link set "$dev" up
    ip -n "$ns" link set lo up
    n=$((n + 1))
  done
}

del_switched_hosts() {
  local ns
  for ns in "$@"; do ip netns del "$ns" 2>/dev/null || true; done
  return 0
}
