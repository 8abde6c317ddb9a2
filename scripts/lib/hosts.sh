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
