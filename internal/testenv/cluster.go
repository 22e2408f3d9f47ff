package testenv

import (
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RedisCluster is a Redis Cluster of private redis-server processes owned
// by a test: Nodes are the masters (slot owners), Replicas[i], if started,
// replicates Nodes[i].
type RedisCluster struct {
	tb       testing.TB
	Nodes    []*RedisServer
	Replicas []*RedisServer
}

func startClusterNode(tb testing.TB) *RedisServer {
	return startRedisServer(tb, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", "3000", "--appendonly", "no")
}

// StartRedisCluster starts a cluster of n masters with the slots split
// evenly, and waits until every node sees it whole.
func StartRedisCluster(tb testing.TB, n int) *RedisCluster {
	tb.Helper()
	requireRedis7(tb)
	c := &RedisCluster{tb: tb}
	for range n {
		c.Nodes = append(c.Nodes, startClusterNode(tb))
	}
	for i, r := range c.Nodes {
		// Distinct config epochs, as redis-cli --cluster create sets them:
		// with all at 0 the nodes resolve the collision later, and slot
		// ownership can flip between two masters while they do.
		r.Do("CLUSTER", "SET-CONFIG-EPOCH", strconv.Itoa(i+1))
		from, to := i*16384/n, (i+1)*16384/n-1
		r.Do("CLUSTER", "ADDSLOTSRANGE", strconv.Itoa(from), strconv.Itoa(to))
	}
	for _, r := range c.Nodes[1:] {
		c.Nodes[0].Do("CLUSTER", "MEET", "127.0.0.1", strconv.Itoa(r.port))
	}
	c.AwaitConsistent()
	return c
}

// AddReplicas gives every master a replica and waits until each is in sync.
func (c *RedisCluster) AddReplicas() {
	c.tb.Helper()
	for i := range c.Nodes {
		r := startClusterNode(c.tb)
		c.Nodes[0].Do("CLUSTER", "MEET", "127.0.0.1", strconv.Itoa(r.port))
		c.Replicas = append(c.Replicas, r)
		// A node replicates only a master it knows: wait for the handshake.
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(r.Do("CLUSTER", "NODES")[0], c.ID(i)) {
			if time.Now().After(deadline) {
				c.tb.Fatal("replica does not know its master after 20 s")
			}
			time.Sleep(20 * time.Millisecond) // polling gossip, bounded above
		}
		r.Do("CLUSTER", "REPLICATE", c.ID(i))
	}
	c.AwaitConsistent()
}

// Failover makes Replicas[i] the master of Nodes[i]'s slots (CLUSTER
// FAILOVER, the graceful manual failover), swaps the two in Nodes and
// Replicas, and waits until every node agrees.
func (c *RedisCluster) Failover(i int) {
	c.tb.Helper()
	c.Replicas[i].Do("CLUSTER", "FAILOVER")
	c.Nodes[i], c.Replicas[i] = c.Replicas[i], c.Nodes[i]
	c.AwaitConsistent()
}

// URL is a redis:// URL of one node; clients discover the others.
func (c *RedisCluster) URL() string { return c.Nodes[0].URL() }

// ID is the cluster node id of node i.
func (c *RedisCluster) ID(i int) string { return c.Nodes[i].Do("CLUSTER", "MYID")[0] }

// Owner is the index of the node that serves slot.
func (c *RedisCluster) Owner(slot int) int {
	c.tb.Helper()
	for i := range c.Nodes {
		id := c.ID(i)
		lines := c.Nodes[i].Do("CLUSTER", "NODES")
		for _, l := range strings.Split(lines[0], "\n") {
			f := strings.Fields(l)
			if len(f) < 8 || f[0] != id {
				continue
			}
			for _, r := range f[8:] {
				lo, hi, ok := strings.Cut(r, "-")
				if !ok {
					hi = lo
				}
				a, err1 := strconv.Atoi(lo)
				b, err2 := strconv.Atoi(hi)
				if err1 == nil && err2 == nil && slot >= a && slot <= b {
					return i
				}
			}
		}
	}
	c.tb.Fatalf("no node serves slot %d", slot)
	return -1
}

// MigrateSlot moves slot and its keys from node from to node to, as a
// resharding does: the slot is marked migrating and importing, its keys are
// moved with MIGRATE (meanwhile commands on moved keys are redirected with
// ASK), then every node is told the new owner.
func (c *RedisCluster) MigrateSlot(slot, from, to int) {
	c.tb.Helper()
	s := strconv.Itoa(slot)
	c.Nodes[to].Do("CLUSTER", "SETSLOT", s, "IMPORTING", c.ID(from))
	c.Nodes[from].Do("CLUSTER", "SETSLOT", s, "MIGRATING", c.ID(to))
	for {
		keys := c.Nodes[from].Do("CLUSTER", "GETKEYSINSLOT", s, "100")
		if len(keys) == 0 {
			break
		}
		c.Nodes[from].Do(append([]string{"MIGRATE", "127.0.0.1", strconv.Itoa(c.Nodes[to].port), "", "0", "5000", "KEYS"}, keys...)...)
	}
	for _, i := range []int{to, from} {
		c.Nodes[i].Do("CLUSTER", "SETSLOT", s, "NODE", c.ID(to))
	}
	for i := range c.Nodes {
		if i != to && i != from {
			c.Nodes[i].Do("CLUSTER", "SETSLOT", s, "NODE", c.ID(to))
		}
	}
	c.AwaitConsistent()
}

// AwaitConsistent waits until every node reports the cluster ok with all
// slots assigned and every node agrees on the epoch-free slot map.
func (c *RedisCluster) AwaitConsistent() {
	c.tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok := true
		var want string
		all := append(slices.Clip(c.Nodes), c.Replicas...)
		for i, r := range all {
			info := r.Do("CLUSTER", "INFO")[0]
			if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_assigned:16384") ||
				!strings.Contains(info, fmt.Sprintf("cluster_known_nodes:%d", len(all))) {
				ok = false
				break
			}
			m := slotMap(r.Do("CLUSTER", "NODES")[0])
			if i == 0 {
				want = m
			} else if m != want {
				ok = false
				break
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			c.tb.Fatalf("redis cluster not consistent after 20 s:\n%s", c.Nodes[0].Do("CLUSTER", "NODES")[0])
		}
		time.Sleep(20 * time.Millisecond) // polling the nodes' gossip, bounded above
	}
}

// slotMap is CLUSTER NODES reduced to each node's id, master and slots,
// sorted by id.
func slotMap(nodes string) string {
	var rows []string
	for _, l := range strings.Split(nodes, "\n") {
		f := strings.Fields(l)
		if len(f) < 8 {
			continue
		}
		rows = append(rows, f[0]+" "+f[3]+" "+strings.Join(f[8:], " ")) // id, its master ("-" for a master), slots
	}
	slices.Sort(rows)
	return strings.Join(rows, "\n")
}

// requireRedis7 fails the test plainly when redis-server is older than 7.0,
// which has no sharded pub/sub.
func requireRedis7(tb testing.TB) {
	tb.Helper()
	out, err := exec.Command("redis-server", "--version").Output()
	if err != nil {
		tb.Fatalf("redis-server --version: %v", err)
	}
	_, v, _ := strings.Cut(string(out), "v=")
	major, _, _ := strings.Cut(v, ".")
	if n, err := strconv.Atoi(major); err != nil || n < 7 {
		tb.Fatalf("Redis Cluster tests need redis-server 7.0 or later (sharded pub/sub); found %q", strings.TrimSpace(string(out)))
	}
}
