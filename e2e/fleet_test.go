package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/dynamic-resource-allocation/cel"
	"k8s.io/dynamic-resource-allocation/structured"
	"k8s.io/klog/v2"
	kptr "k8s.io/utils/ptr"

	"github.com/smarter-project/smarter-device-manager/conf"
	"github.com/smarter-project/smarter-device-manager/daemon"
	sdmdra "github.com/smarter-project/smarter-device-manager/dra"
	"github.com/smarter-project/smarter-device-manager/hotplug"
	"github.com/smarter-project/smarter-device-manager/internal/hwfixture"
)

// The fleet benchmark (issue 22 item 3; make bench, part "fleet"): what
// DRA mode costs a control plane when many nodes run it. One real
// kube-apiserver with its etcd (as the DRA tests start them) in this
// process; in a second process (this test binary again, running
// TestDRAFleetNodes) SDM_BENCH_FLEET_NODES simulated nodes, each the
// daemon's own event loop and rule matching (daemon.Run) over a fake
// machine of ten USB serial adapters laid out as the kernel and udev do
// (hwfixture: FT232R and CP2102N, each with its serial), publishing
// through the project's dra.Driver (the kubelet plugin helper and its
// ResourceSlice controller) with its own connection to the API server, as
// each node's daemon has. The nodes churn as a fleet does: one plug or
// unplug per node every few minutes (exponentially spaced, mean
// fleetChurnMean), and SDM_BENCH_FLEET_FLAPPING nodes have a cable that
// flaps ten times a second for the whole run. Two processes, so that this
// one's CPU and memory are the API server's and etcd's alone.

// fleetChurnMean is the mean time between two changes on one node.
const fleetChurnMean = 3 * time.Minute

// fleetDevices is how many adapters each node has.
const fleetDevices = 10

// fleetRemoveAfter is the command line's default --remove-after.
const fleetRemoveAfter = 5 * time.Minute

// fleetFlapEvery is the flapping cable's period of change.
const fleetFlapEvery = 100 * time.Millisecond

func fleetNodeName(i int) string { return fmt.Sprintf("fleet-%04d", i) }

// fleetFlaps says whether node i of n is one of the flapping ones:
// spread evenly over the fleet.
func fleetFlaps(i, n, flapping int) bool {
	return flapping > 0 && i%(n/flapping) == 0 && i/(n/flapping) < flapping
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

// TestDRAFleet runs the fleet benchmark and prints its figures as FLEET
// lines (key=value) for sdm-bench.
func TestDRAFleet(t *testing.T) {
	nodes := envInt("SDM_BENCH_FLEET_NODES", 0)
	if nodes <= 0 {
		t.Skip("skipping: a benchmark; set SDM_BENCH_FLEET_NODES (make bench does: 1000)")
	}
	secs := envInt("SDM_BENCH_FLEET_SECONDS", 300)
	flapping := envInt("SDM_BENCH_FLEET_FLAPPING", 5)
	ctx := t.Context()

	// Authorization as a real cluster has it, so that every write of a
	// node's slices passes RBAC and the packaging's admission policy.
	cfg, etcdURL := startAPIServerEtcd(t, "--authorization-mode=Node,RBAC")
	admin := rest.CopyConfig(cfg)
	admin.QPS, admin.Burst = 1000, 2000
	client, err := kubernetes.NewForConfig(admin)
	if err != nil {
		t.Fatal(err)
	}
	createFleetNodes(t, client, nodes)
	kubeconfig := filepath.Join(mkdirTemp(t), "kubeconfig")
	writeKubeconfig(t, cfg, kubeconfig)
	tokens := fleetTokens(t, cfg, client, nodes)
	counter := startSliceCounter(t, client)

	s0 := takeFleetSample(t, client, etcdURL)
	child := startFleetChild(t, kubeconfig, tokens, nodes, secs, flapping)
	startedAt := time.Now()
	// Ready: every node publishes all its devices.
	for counter.nodesWith(fleetDevices) < nodes {
		if child.exited() {
			t.Fatalf("the fleet's process ended before every node published:\n%s", child.logTail())
		}
		if time.Since(startedAt) > 15*time.Minute {
			t.Fatalf("after 15 min %d of %d nodes publish their devices", counter.nodesWith(fleetDevices), nodes)
		}
		time.Sleep(200 * time.Millisecond)
	}
	startup := time.Since(startedAt)
	// Let the start-up's stragglers (informer relists, the controllers'
	// delayed syncs) settle before the churn is measured.
	time.Sleep(10 * time.Second)
	s1 := takeFleetSample(t, client, etcdURL)
	w1 := counter.snapshot()
	goLine := child.command("go", "go")
	done := child.waitFor("done", time.Duration(secs)*time.Second+5*time.Minute)
	s2 := takeFleetSample(t, client, etcdURL)
	w2 := counter.snapshot()
	// Every node's daemon restarted at once (a fleet-wide upgrade): what
	// taking over its slices costs once all is quiet again.
	restartAt := time.Now()
	restarted := child.command("restart", "restarted")
	// A minute: each controller syncs at once after its informer.
	time.Sleep(time.Minute)
	s3 := takeFleetSample(t, client, etcdURL)
	w3 := counter.snapshot()
	child.stop()

	window := s2.at.Sub(s1.at).Seconds()
	fmt.Printf("FLEET phase=startup nodes=%d seconds=%.1f %s\n", nodes, startup.Seconds(), s0.delta(s1))
	fmt.Printf("FLEET phase=churn nodes=%d seconds=%.1f %s\n", nodes, window, s1.delta(s2))
	// Slice writes per node during the churn, the flapping nodes apart.
	var quiet, flappy []int
	for i := range nodes {
		n := w2.writes[fleetNodeName(i)] - w1.writes[fleetNodeName(i)]
		if fleetFlaps(i, nodes, flapping) {
			flappy = append(flappy, n)
		} else {
			quiet = append(quiet, n)
		}
	}
	sum := func(xs []int) (s int) {
		for _, x := range xs {
			s += x
		}
		return s
	}
	mean := func(xs []int) float64 {
		if len(xs) == 0 {
			return 0
		}
		return float64(sum(xs)) / float64(len(xs))
	}
	maxOf := func(xs []int) int {
		if len(xs) == 0 {
			return 0
		}
		return slices.Max(xs)
	}
	updates := s2.req["PUT resourceslices"] - s1.req["PUT resourceslices"]
	modified := w2.modified - w1.modified
	fmt.Printf("FLEET phase=writes nodes=%d seconds=%.1f changes=%s flap_changes=%s slice_writes=%d writes_per_s=%.2f quiet_nodes=%d quiet_writes_mean=%.2f quiet_writes_max=%d flapping_nodes=%d flapping_writes_mean=%.1f flapping_writes_max=%d update_requests=%.0f updates_seen=%d unchanged_updates=%.0f metadata_only=%d expiry_writes=%d\n",
		nodes, window, done["changes"], done["flap_changes"], sum(quiet)+sum(flappy), float64(sum(quiet)+sum(flappy))/window,
		len(quiet), mean(quiet), maxOf(quiet), len(flappy), mean(flappy), maxOf(flappy),
		updates, modified, max(0, updates-float64(modified)), w2.metaOnly-w1.metaOnly, w2.expiry-w1.expiry)
	restartWrites := 0
	for node, n := range w3.writes {
		restartWrites += n - w2.writes[node]
	}
	fmt.Printf("FLEET phase=restart nodes=%d seconds=%.1f slice_writes=%d expiry_writes=%d nodes_with_unplugged=%s update_requests=%.0f %s\n", nodes, time.Since(restartAt).Seconds(),
		restartWrites, w3.expiry-w2.expiry, restarted["nodes_with_unplugged"], s3.req["PUT resourceslices"]-s2.req["PUT resourceslices"], s2.delta(s3))
	fleetCPU := func(k string) float64 { v, _ := strconv.ParseFloat(k, 64); return v }
	fmt.Printf("FLEET phase=nodes nodes=%d seconds=%.1f cpu_s=%.1f cpu_per_node_ms_per_min=%.2f rss_mb=%s heap_mb=%s\n",
		nodes, window, fleetCPU(done["cpu_s"])-fleetCPU(goLine["cpu_s"]),
		(fleetCPU(done["cpu_s"])-fleetCPU(goLine["cpu_s"]))*1000/float64(nodes)/(window/60), done["rss_mb"], done["heap_mb"])

	fleetAllocatorBench(t, ctx, client, nodes)
}

// createFleetNodes creates the fleet's Node objects (the driver's slices
// name their Node as owner).
func createFleetNodes(t *testing.T, client kubernetes.Interface, nodes int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < nodes; i += 8 {
				n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: fleetNodeName(i), Labels: map[string]string{"kubernetes.io/hostname": fleetNodeName(i)}}}
				if _, err := client.CoreV1().Nodes().Create(t.Context(), n, metav1.CreateOptions{}); err != nil {
					errs <- fmt.Errorf("creating Node %s: %w", n.Name, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// fleetNS is the namespace the packaging runs the daemon in.
const fleetNS = "smarter-device-manager"

// fleetTokens applies the packaging's DRA RBAC and admission policy
// (packaging/overlays/dra/rbac.yaml, decoded by client-go's own
// deserializer), creates the daemon's pod on every node, and requests a
// token bound to each pod, as the kubelet does for the pod's projected
// service-account volume: the token names the pod's node, which the
// policy holds the pod's writes to. It writes the tokens, one line per
// node, to a file and returns its path.
func fleetTokens(t *testing.T, cfg *rest.Config, client kubernetes.Interface, nodes int) string {
	t.Helper()
	ctx := t.Context()
	if _, err := client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fleetNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("../packaging/overlays/dra/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	sa := ""
	for i, doc := range splitYAML(raw) {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("rbac.yaml document %d: %v", i, err)
		}
		switch o := obj.(type) {
		case *v1.ServiceAccount:
			sa = o.Name
			_, err = client.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRole:
			_, err = client.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			_, err = client.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		case *admissionv1.ValidatingAdmissionPolicy:
			_, err = client.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(ctx, o, metav1.CreateOptions{})
		case *admissionv1.ValidatingAdmissionPolicyBinding:
			_, err = client.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(ctx, o, metav1.CreateOptions{})
		default:
			t.Fatalf("rbac.yaml document %d: %T is not applied here; add it", i, obj)
		}
		if err != nil {
			t.Fatalf("applying rbac.yaml document %d: %v", i, err)
		}
	}
	tokens := make([]string, nodes)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < nodes; i += 8 {
				pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "sdm-" + fleetNodeName(i), Namespace: fleetNS},
					Spec: v1.PodSpec{NodeName: fleetNodeName(i), ServiceAccountName: sa,
						Containers: []v1.Container{{Name: "smarter-device-manager", Image: "smarter-device-manager"}}}}
				pod, err := client.CoreV1().Pods(fleetNS).Create(ctx, pod, metav1.CreateOptions{})
				if err != nil {
					errs <- fmt.Errorf("creating the daemon's pod on %s: %w", fleetNodeName(i), err)
					return
				}
				tr, err := client.CoreV1().ServiceAccounts(fleetNS).CreateToken(ctx, sa, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
					ExpirationSeconds: ptr(int64(4 * 3600)),
					BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}}}, metav1.CreateOptions{})
				if err != nil {
					errs <- fmt.Errorf("a token for %s: %w", pod.Name, err)
					return
				}
				tokens[i] = tr.Status.Token
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// The policy holds: node 0's daemon may not write node 1's slices
	// (the policy is loaded a moment after it is created).
	nc := rest.AnonymousClientConfig(cfg)
	nc.BearerToken = tokens[0]
	node0, err := kubernetes.NewForConfig(nc)
	if err != nil {
		t.Fatal(err)
	}
	other := &resourceapi.ResourceSlice{ObjectMeta: metav1.ObjectMeta{Name: "not-mine"}, Spec: resourceapi.ResourceSliceSpec{
		Driver: draDriver, NodeName: ptr(fleetNodeName(min(1, nodes-1))), Pool: resourceapi.ResourcePool{Name: "p", ResourceSliceCount: 1}}}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
		_, err := node0.ResourceV1().ResourceSlices().Create(ctx, other, metav1.CreateOptions{})
		if err != nil && strings.Contains(err.Error(), "may not write ResourceSlices of") {
			break
		}
		if err == nil {
			if err := client.ResourceV1().ResourceSlices().Delete(ctx, other.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node 0's token wrote another node's slice (the admission policy is not in force): %v", err)
		}
	}
	file := filepath.Join(mkdirTemp(t), "tokens")
	if err := os.WriteFile(file, []byte(strings.Join(tokens, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// sliceCounter counts what a watch of every ResourceSlice sees, per node:
// each event is one write the API server made and sent to every watcher
// (the scheduler, each node's own controller).
type sliceCounter struct {
	mu       sync.Mutex
	writes   map[string]int            // node → slices created, changed and deleted
	devices  map[string]map[string]int // node → slice → its devices
	modified int                       // changes seen
	metaOnly int                       // changes that left the spec as it was
	expiry   int                       // changes that only dropped devices unplugged longer than --remove-after
}

type sliceCounts struct {
	writes                     map[string]int
	modified, metaOnly, expiry int
}

// onlyExpiry says whether the change from o to n only drops devices
// unplugged (tainted) at least --remove-after ago: the daemon's own
// removal, not a write of the restart or the churn.
func onlyExpiry(o, n *resourceapi.ResourceSlice, now time.Time) bool {
	kept := map[string]resourceapi.Device{}
	for _, d := range n.Spec.Devices {
		kept[d.Name] = d
	}
	dropped := 0
	for _, d := range o.Spec.Devices {
		if k, ok := kept[d.Name]; ok {
			if !equality.Semantic.DeepEqual(d, k) {
				return false
			}
			delete(kept, d.Name)
			continue
		}
		expired := slices.ContainsFunc(d.Taints, func(t resourceapi.DeviceTaint) bool {
			return t.Key == draDriver+"/"+sdmdra.TaintUnplugged && t.TimeAdded != nil && !now.Before(t.TimeAdded.Add(fleetRemoveAfter-2*time.Second))
		})
		if !expired {
			return false
		}
		dropped++
	}
	return dropped > 0 && len(kept) == 0
}

func startSliceCounter(t *testing.T, client kubernetes.Interface) *sliceCounter {
	t.Helper()
	c := &sliceCounter{writes: map[string]int{}, devices: map[string]map[string]int{}}
	factory := informers.NewSharedInformerFactory(client, 0)
	inf := factory.Resource().V1().ResourceSlices().Informer()
	set := func(s *resourceapi.ResourceSlice, gone bool) {
		node := kptr.Deref(s.Spec.NodeName, "")
		c.writes[node]++
		if c.devices[node] == nil {
			c.devices[node] = map[string]int{}
		}
		if gone {
			delete(c.devices[node], s.Name)
		} else {
			c.devices[node][s.Name] = len(s.Spec.Devices)
		}
	}
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			c.mu.Lock()
			defer c.mu.Unlock()
			set(obj.(*resourceapi.ResourceSlice), false)
		},
		UpdateFunc: func(oldObj, newObj any) {
			o, n := oldObj.(*resourceapi.ResourceSlice), newObj.(*resourceapi.ResourceSlice)
			if o.ResourceVersion == n.ResourceVersion {
				return // a relist, no write
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			c.modified++
			if equality.Semantic.DeepEqual(o.Spec, n.Spec) {
				c.metaOnly++
			}
			if onlyExpiry(o, n, time.Now()) {
				c.expiry++
			}
			set(n, false)
		},
		DeleteFunc: func(obj any) {
			s, ok := obj.(*resourceapi.ResourceSlice)
			if !ok {
				if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					s, _ = tomb.Obj.(*resourceapi.ResourceSlice)
				}
			}
			if s == nil {
				return
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			set(s, true)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	factory.Start(t.Context().Done())
	t.Cleanup(factory.Shutdown)
	factory.WaitForCacheSync(t.Context().Done())
	return c
}

// nodesWith is how many nodes publish exactly n devices.
func (c *sliceCounter) nodesWith(n int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	count := 0
	for _, bySlice := range c.devices {
		total := 0
		for _, d := range bySlice {
			total += d
		}
		if total == n {
			count++
		}
	}
	return count
}

func (c *sliceCounter) snapshot() sliceCounts {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := make(map[string]int, len(c.writes))
	for k, v := range c.writes {
		w[k] = v
	}
	return sliceCounts{writes: w, modified: c.modified, metaOnly: c.metaOnly, expiry: c.expiry}
}

// fleetSample is the API server's state at one moment: its request
// counters and latency histograms (from its /metrics, parsed by
// Prometheus' own parser), this process's CPU and memory (the API server
// and etcd: the nodes run in another process), etcd's size.
type fleetSample struct {
	at            time.Time
	cpu           time.Duration
	rssMB, heapMB float64
	req           map[string]float64    // "VERB resource[/subresource]" → requests
	failed        map[string]float64    // "VERB resource code" → requests answered 4xx or 5xx
	sli           map[string]*histogram // the same → the SLI latency histogram
	watches       float64               // open watches
	etcdMB        float64               // etcd's database file
	etcdInUseMB   float64               // of which in use
}

type histogram struct {
	bounds []float64 // upper bounds, ascending; the last +Inf
	counts []float64 // cumulative
}

func takeFleetSample(t *testing.T, client kubernetes.Interface, etcdURL string) fleetSample {
	t.Helper()
	s := fleetSample{at: time.Now(), req: map[string]float64{}, failed: map[string]float64{}, sli: map[string]*histogram{}}
	s.cpu = selfCPU()
	s.rssMB = float64(procStatusKB(t, os.Getpid(), "VmRSS")) / (1 << 20)
	// The live heap: what the API server and etcd hold, not garbage.
	runtime.GC()
	heap := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(heap)
	s.heapMB = float64(heap[0].Value.Uint64()) / (1 << 20)

	raw, err := client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(t.Context())
	if err != nil {
		t.Fatalf("reading the API server's metrics: %v", err)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatalf("parsing the API server's metrics: %v", err)
	}
	label := func(m *dto.Metric, name string) string {
		for _, l := range m.GetLabel() {
			if l.GetName() == name {
				return l.GetValue()
			}
		}
		return ""
	}
	key := func(m *dto.Metric) string {
		k := label(m, "verb") + " " + label(m, "resource")
		if sub := label(m, "subresource"); sub != "" {
			k += "/" + sub
		}
		return k
	}
	if f := families["apiserver_request_total"]; f != nil {
		for _, m := range f.GetMetric() {
			s.req[key(m)] += m.GetCounter().GetValue()
			if code := label(m, "code"); code >= "400" {
				s.failed[key(m)+" "+code] += m.GetCounter().GetValue()
			}
		}
	}
	if f := families["apiserver_request_sli_duration_seconds"]; f != nil {
		for _, m := range f.GetMetric() {
			h := s.sli[key(m)]
			if h == nil {
				h = &histogram{}
				for _, b := range m.GetHistogram().GetBucket() {
					h.bounds = append(h.bounds, b.GetUpperBound())
				}
				h.bounds = append(h.bounds, math.Inf(1))
				h.counts = make([]float64, len(h.bounds))
				s.sli[key(m)] = h
			}
			for i, b := range m.GetHistogram().GetBucket() {
				h.counts[i] += float64(b.GetCumulativeCount())
			}
			h.counts[len(h.counts)-1] += float64(m.GetHistogram().GetSampleCount())
		}
	}
	if f := families["apiserver_longrunning_requests"]; f != nil {
		for _, m := range f.GetMetric() {
			if label(m, "verb") == "WATCH" {
				s.watches += m.GetGauge().GetValue()
			}
		}
	}

	etcd, err := clientv3.New(clientv3.Config{Endpoints: []string{etcdURL}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("connecting to etcd: %v", err)
	}
	defer etcd.Close()
	st, err := etcd.Status(t.Context(), etcdURL)
	if err != nil {
		t.Fatalf("etcd status: %v", err)
	}
	s.etcdMB, s.etcdInUseMB = float64(st.DbSize)/(1<<20), float64(st.DbSizeInUse)/(1<<20)
	return s
}

// quantile is the q-quantile of the observations between a and b (b's
// counts minus a's), interpolated inside its bucket as Prometheus'
// histogram_quantile does; 0 with no observation.
func quantile(a, b *histogram, q float64) (float64, float64) {
	if b == nil {
		return 0, 0
	}
	counts := slices.Clone(b.counts)
	if a != nil {
		for i := range counts {
			counts[i] -= a.counts[i]
		}
	}
	total := counts[len(counts)-1]
	if total == 0 {
		return 0, 0
	}
	rank := q * total
	for i, c := range counts {
		if c >= rank {
			lo, below := 0.0, 0.0
			if i > 0 {
				lo, below = b.bounds[i-1], counts[i-1]
			}
			hi := b.bounds[i]
			if math.IsInf(hi, 1) {
				return lo, total
			}
			if c == below {
				return hi, total
			}
			return lo + (hi-lo)*(rank-below)/(c-below), total
		}
	}
	return b.bounds[len(b.bounds)-2], total
}

// delta is what the API server did between s and e, as key=value pairs.
func (s fleetSample) delta(e fleetSample) string {
	secs := e.at.Sub(s.at).Seconds()
	var total, mutating float64
	byKey := map[string]float64{}
	for k, v := range e.req {
		d := v - s.req[k]
		if d <= 0 || strings.HasPrefix(k, "WATCH") {
			continue
		}
		total += d
		byKey[k] = d
		switch strings.SplitN(k, " ", 2)[0] {
		case "POST", "PUT", "PATCH", "DELETE", "CREATE", "UPDATE", "APPLY", "DELETECOLLECTION":
			mutating += d
		}
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return byKey[keys[i]] > byKey[keys[j]] })
	var top []string
	for _, k := range keys[:min(6, len(keys))] {
		top = append(top, fmt.Sprintf("%s:%.0f", strings.ReplaceAll(k, " ", "_"), byKey[k]))
	}
	// The slowest (verb, resource) pair's p99: what the SLO bounds.
	worst, worstKey, worstN := 0.0, "", 0.0
	for k, h := range e.sli {
		p99, n := quantile(s.sli[k], h, 0.99)
		if n > 0 && p99 > worst {
			worst, worstKey, worstN = p99, k, n
		}
	}
	p50u, nu := quantile(s.sli["PUT resourceslices"], e.sli["PUT resourceslices"], 0.5)
	p99u, _ := quantile(s.sli["PUT resourceslices"], e.sli["PUT resourceslices"], 0.99)
	p50c, nc := quantile(s.sli["POST resourceslices"], e.sli["POST resourceslices"], 0.5)
	p99c, _ := quantile(s.sli["POST resourceslices"], e.sli["POST resourceslices"], 0.99)
	var failed []string
	for k, v := range e.failed {
		if d := v - s.failed[k]; d > 0 {
			failed = append(failed, fmt.Sprintf("%s:%.0f", strings.ReplaceAll(k, " ", "_"), d))
		}
	}
	slices.Sort(failed)
	if failed == nil {
		failed = []string{"none"}
	}
	cpu := (e.cpu - s.cpu).Seconds()
	return fmt.Sprintf("failed=%s requests=%.0f requests_per_s=%.2f mutating_per_s=%.2f top=%s slice_update_n=%.0f slice_update_p50_ms=%.1f slice_update_p99_ms=%.1f slice_create_n=%.0f slice_create_p50_ms=%.1f slice_create_p99_ms=%.1f worst_p99_ms=%.1f worst=%s worst_n=%.0f apiserver_cpu_s=%.1f apiserver_cores=%.3f apiserver_rss_mb_before=%.0f apiserver_rss_mb=%.0f apiserver_heap_mb_before=%.0f apiserver_heap_mb=%.0f watches=%.0f etcd_mb=%.1f etcd_in_use_mb=%.1f",
		strings.Join(failed, ","), total, total/secs, mutating/secs, strings.Join(top, ","),
		nu, p50u*1000, p99u*1000, nc, p50c*1000, p99c*1000, worst*1000, strings.ReplaceAll(worstKey, " ", "_"), worstN,
		cpu, cpu/secs, s.rssMB, e.rssMB, s.heapMB, e.heapMB, e.watches, e.etcdMB, e.etcdInUseMB)
}

// fleetChild is the process that runs the fleet's nodes.
type fleetChild struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	log   string
	done  chan struct{}
}

func startFleetChild(t *testing.T, kubeconfig, tokens string, nodes, secs, flapping int) *fleetChild {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(mkdirTemp(t), "fleet.log")
	lf, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lf.Close() })
	cmd := exec.Command(self, "-test.run=^TestDRAFleetNodes$", "-test.v", "-test.timeout=0")
	cmd.Env = append(os.Environ(),
		"SDM_FLEET_KUBECONFIG="+kubeconfig,
		"SDM_FLEET_TOKENS="+tokens,
		"SDM_FLEET_NODES="+strconv.Itoa(nodes),
		"SDM_FLEET_SECONDS="+strconv.Itoa(secs),
		"SDM_FLEET_FLAPPING="+strconv.Itoa(flapping),
		// The nodes need no daemon binary: TestMain builds none.
		"SDM_E2E_DAEMON=/nonexistent")
	cmd.Stderr = lf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &fleetChild{t: t, cmd: cmd, lines: make(chan string, 16), log: logFile, done: make(chan struct{})}
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(lf, line)
			if rest, ok := strings.CutPrefix(line, "FLEETCHILD "); ok {
				c.lines <- rest
			}
		}
		close(c.lines)
	}()
	go func() {
		cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			if pid := cmd.Process.Pid; pid > 1 {
				cmd.Process.Kill()
			}
			<-c.done
		}
	})
	return c
}

func (c *fleetChild) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *fleetChild) logTail() string {
	data, _ := os.ReadFile(c.log)
	if len(data) > 8000 {
		data = data[len(data)-8000:]
	}
	return string(data)
}

// command sends cmd and waits for the line that answers it.
func (c *fleetChild) command(cmd, answer string) map[string]string {
	c.t.Helper()
	if _, err := fmt.Fprintln(c.stdin, cmd); err != nil {
		c.t.Fatalf("telling the fleet %q: %v\n%s", cmd, err, c.logTail())
	}
	return c.waitFor(answer, time.Minute)
}

// waitFor waits for the fleet's line that starts with word and returns
// its key=value pairs.
func (c *fleetChild) waitFor(word string, timeout time.Duration) map[string]string {
	c.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				c.t.Fatalf("the fleet's process ended before %q:\n%s", word, c.logTail())
			}
			fields := strings.Fields(line)
			if len(fields) == 0 || fields[0] != word {
				continue
			}
			kv := map[string]string{}
			for _, f := range fields[1:] {
				if k, v, ok := strings.Cut(f, "="); ok {
					kv[k] = v
				}
			}
			return kv
		case <-deadline:
			c.t.Fatalf("no %q from the fleet in %v:\n%s", word, timeout, c.logTail())
		}
	}
}

func (c *fleetChild) stop() {
	c.t.Helper()
	fmt.Fprintln(c.stdin, "stop")
	select {
	case <-c.done:
	case <-time.After(2 * time.Minute):
		c.t.Errorf("the fleet did not stop in 2 min:\n%s", c.logTail())
	}
	if st := c.cmd.ProcessState; st != nil && !st.Success() {
		c.t.Errorf("the fleet's process: %v\n%s", st, c.logTail())
	}
}

// TestDRAFleetNodes is the fleet's nodes, run by TestDRAFleet in a
// process of their own. It reads commands on stdin (go: churn for
// SDM_FLEET_SECONDS; restart: every node's daemon stopped and started
// again; stop) and answers FLEETCHILD lines on stdout.
func TestDRAFleetNodes(t *testing.T) {
	kubeconfig := os.Getenv("SDM_FLEET_KUBECONFIG")
	if kubeconfig == "" {
		t.Skip("skipping: the fleet benchmark's nodes, run by TestDRAFleet in a process of their own")
	}
	nodes, secs, flapping := envInt("SDM_FLEET_NODES", 0), envInt("SDM_FLEET_SECONDS", 0), envInt("SDM_FLEET_FLAPPING", 0)
	log := zerolog.New(os.Stderr).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	// client-go's reflectors log through klog's global logger: warnings
	// and errors only (TestMain sends it elsewhere at V(4)).
	klog.SetLogger(sdmdra.NewLogr(log))
	base, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	tokenData, err := os.ReadFile(os.Getenv("SDM_FLEET_TOKENS"))
	if err != nil {
		t.Fatal(err)
	}
	tokens := strings.Fields(string(tokenData))
	if len(tokens) != nodes {
		t.Fatalf("%d tokens for %d nodes", len(tokens), nodes)
	}
	dir, err := os.MkdirTemp("", "sdm-fleet")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)

	fleet := make([]*fleetNode, nodes)
	defer func() {
		for _, n := range fleet {
			if n != nil {
				n.stop()
			}
		}
	}()
	for i := range nodes {
		fleet[i] = newFleetNode(base, tokens[i], filepath.Join(dir, strconv.Itoa(i)), i, log)
		if err := fleet[i].start(); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Println("FLEETCHILD started")

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "go":
			fmt.Printf("FLEETCHILD go cpu_s=%.2f\n", selfCPU().Seconds())
			churn, stopChurn := context.WithTimeout(context.Background(), time.Duration(secs)*time.Second)
			var cw sync.WaitGroup
			for i, n := range fleet {
				cw.Go(func() { n.churn(churn, uint64(i)) })
				if fleetFlaps(i, nodes, flapping) {
					cw.Go(func() { n.flap(churn) })
				}
			}
			cw.Wait()
			stopChurn()
			var changes, flaps int
			for _, n := range fleet {
				changes += n.changes
				flaps += n.flaps
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			fmt.Printf("FLEETCHILD done cpu_s=%.2f rss_mb=%.0f heap_mb=%.0f changes=%d flap_changes=%d\n",
				selfCPU().Seconds(), float64(procStatusKB(t, os.Getpid(), "VmRSS"))/(1<<20), float64(ms.HeapAlloc)/(1<<20), changes, flaps)
		case "restart":
			// What a new process cannot know: unplugged adapters (the
			// daemon keeps them, tainted, for --remove-after) and the
			// flapping ones.
			forgets := 0
			for i, n := range fleet {
				if slices.Contains(n.plugged[:], nil) || fleetFlaps(i, nodes, flapping) {
					forgets++
				}
			}
			for _, n := range fleet {
				n.stop()
			}
			for _, n := range fleet {
				if err := n.start(); err != nil {
					t.Fatal(err)
				}
			}
			fmt.Printf("FLEETCHILD restarted nodes_with_unplugged=%d\n", forgets)
		case "stop":
			return
		}
	}
}

// fleetNode is one simulated node: a fake machine with its adapters, the
// daemon over it, its DRA driver.
type fleetNode struct {
	name  string
	dir   string
	cfg   *rest.Config
	log   zerolog.Logger
	m     *hwfixture.Machine
	event chan hotplug.Event

	mu      sync.Mutex
	hw      [fleetDevices]hwfixture.USBDevice
	plugged [fleetDevices]*hwfixture.Plugged // nil: unplugged
	changes int                              // churn's plugs and unplugs
	flaps   int                              // the flapping cable's

	cancel context.CancelFunc // stops the daemon
	done   chan struct{}      // closed when it has stopped
}

// Run is the node's uevent source (daemon.EventSource).
func (n *fleetNode) Run(ctx context.Context, notify func(hotplug.Event)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-n.event:
			notify(ev)
		}
	}
}

// newFleetNode lays out node i's machine: ten adapters plugged in.
func newFleetNode(base *rest.Config, token, dir string, i int, log zerolog.Logger) *fleetNode {
	n := &fleetNode{name: fleetNodeName(i), dir: dir, m: hwfixture.New(true), event: make(chan hotplug.Event, 64)}
	n.log = log.With().Str("node", n.name).Logger()
	for s := range fleetDevices {
		port := strconv.Itoa(s + 1)
		if s < 6 {
			// FTDI's factory serials: 8 characters.
			n.hw[s] = hwfixture.FT232R(hwfixture.IntelXHCI, port, fmt.Sprintf("F%04dX%02d", i, s))
		} else {
			// Silicon Labs' CP2102N: 32 hex digits.
			n.hw[s] = hwfixture.CP2102N(hwfixture.IntelXHCI, port, fmt.Sprintf("%08x%016x%08x", i, uint64(0xeb11a1b2c3d4e5f6), s))
		}
		n.plugged[s] = n.m.Plug(n.hw[s])
	}
	n.cfg = rest.AnonymousClientConfig(base)
	// As the daemon in its pod: the service account's token (bound to
	// the node's pod, so it names the node), the kubelet's rate limit.
	n.cfg.BearerToken = token
	n.cfg.QPS, n.cfg.Burst = 50, 100
	n.cfg.UserAgent = "smarter-device-manager/fleet"
	return n
}

// start starts the node's daemon and driver, with a connection of their
// own to the API server, as each node's daemon has.
func (n *fleetNode) start() error {
	httpClient, err := rest.HTTPClientFor(n.cfg)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfigAndClient(n.cfg, httpClient)
	if err != nil {
		return err
	}
	drv, err := sdmdra.New(sdmdra.Options{NodeName: n.name, Client: client,
		RegistryDir: filepath.Join(n.dir, "reg"), PluginDir: filepath.Join(n.dir, "plug"), CDIDir: filepath.Join(n.dir, "cdi"),
		RemoveAfter: fleetRemoveAfter, Logger: n.log})
	if err != nil {
		return err
	}
	opts := daemon.Options{
		Config:      conf.Default(),
		DevRoot:     "/dev",
		CDIDir:      filepath.Join(n.dir, "dcdi"),
		RemoveAfter: fleetRemoveAfter,
		FlapDamping: daemon.DefaultFlapDamping,
		Resync:      time.Minute,
		Events:      n,
		Logger:      n.log,
		Stats:       new(daemon.Stats),
		DevFS:       n.m.Dev, SysFS: n.m.Sys, RunFS: n.m.Run, ProcFS: n.m.Proc,
		Output: drv,
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel, n.done = cancel, make(chan struct{})
	go func() {
		defer close(n.done)
		defer httpClient.CloseIdleConnections()
		if err := daemon.Run(ctx, opts); err != nil && ctx.Err() == nil {
			n.log.Error().Err(err).Msg("fleet node's daemon stopped")
		}
	}()
	return nil
}

// stop stops the node's daemon and waits for it.
func (n *fleetNode) stop() {
	if n.cancel == nil {
		return
	}
	n.cancel()
	<-n.done
	n.cancel = nil
}

// toggle unplugs adapter s, or plugs it back in, and sends the uevent.
func (n *fleetNode) toggle(ctx context.Context, s int) {
	n.mu.Lock()
	action := "remove"
	p := n.plugged[s]
	if p == nil {
		p = n.m.Plug(n.hw[s])
		n.plugged[s] = p
		action = "add"
	} else {
		n.m.Unplug(p)
		n.plugged[s] = nil
	}
	n.mu.Unlock()
	node := p.Node("ttyUSB*")
	ev := hotplug.Event{Action: action, DevPath: "/" + node.SysPath, Subsystem: "tty", DevName: node.Path}
	select {
	case n.event <- ev:
	case <-ctx.Done():
	}
}

// churn plugs or unplugs one of the node's steady adapters every few
// minutes until ctx ends.
func (n *fleetNode) churn(ctx context.Context, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 22))
	for {
		wait := time.Duration(rng.ExpFloat64() * float64(fleetChurnMean))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		n.toggle(ctx, rng.IntN(fleetDevices-1)) // the last one is the flapping nodes' cable
		n.changes++
	}
}

// flap unplugs and replugs the node's last adapter every fleetFlapEvery
// until ctx ends.
func (n *fleetNode) flap(ctx context.Context) {
	tick := time.NewTicker(fleetFlapEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			n.toggle(ctx, fleetDevices-1)
			n.flaps++
		}
	}
}

// fleetAllocatorBench times the scheduler's DRA filter for a claim that
// selects one adapter by serial among the fleet's devices: the
// structured allocator made once for a scheduling cycle over every slice
// (the DRA plugin's PreFilter), then run for one node after another (its
// Filter, called for every node until enough feasible ones are found:
// here only one node is, so every node is tried). Then the same over the
// slices repeated to five times as many nodes (renamed, each its own
// serials), for the 5,000-node figure.
func fleetAllocatorBench(t *testing.T, ctx context.Context, client kubernetes.Interface, nodes int) {
	t.Helper()
	class := &resourceapi.DeviceClass{ObjectMeta: metav1.ObjectMeta{Name: draClass},
		Spec: resourceapi.DeviceClassSpec{Selectors: []resourceapi.DeviceSelector{{CEL: &resourceapi.CELDeviceSelector{
			Expression: fmt.Sprintf("device.driver == %q", draDriver)}}}}}
	class, err := client.ResourceV1().DeviceClasses().Create(ctx, class, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	list, err := client.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nodeList, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The target: a device with no taint on a node late in the list, so
	// a scheduler trying nodes in order passes most before it.
	var serial, targetNode string
	devices := 0
	for _, s := range list.Items {
		devices += len(s.Spec.Devices)
		for _, d := range s.Spec.Devices {
			if len(d.Taints) == 0 && kptr.Deref(s.Spec.NodeName, "") == fleetNodeName(nodes*3/4) {
				serial, targetNode = *d.Attributes[sdmdra.AttrSerial].StringValue, kptr.Deref(s.Spec.NodeName, "")
			}
		}
	}
	if serial == "" {
		t.Fatalf("no untainted device on %s", fleetNodeName(nodes*3/4))
	}
	claim, err := client.ResourceV1().ResourceClaims(metav1.NamespaceDefault).Create(ctx,
		selectorClaim("fleet-serial", fmt.Sprintf(`device.attributes[%q].serial == %q`, draDriver, serial), ""), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, scale := range []int{1, 5} {
		var sl []*resourceapi.ResourceSlice
		var ns []*v1.Node
		for k := range scale {
			suffix := ""
			if k > 0 {
				suffix = fmt.Sprintf("-x%d", k)
			}
			for i := range list.Items {
				s := list.Items[i].DeepCopy()
				if k > 0 {
					s.Name += suffix
					s.Spec.NodeName = ptr(kptr.Deref(s.Spec.NodeName, "") + suffix)
					s.Spec.Pool.Name += suffix
					for j := range s.Spec.Devices {
						a := s.Spec.Devices[j].Attributes[sdmdra.AttrSerial]
						a.StringValue = ptr(*a.StringValue + suffix)
						s.Spec.Devices[j].Attributes[sdmdra.AttrSerial] = a
					}
				}
				sl = append(sl, s)
			}
			for i := range nodeList.Items {
				n := nodeList.Items[i].DeepCopy()
				n.Name += suffix
				ns = append(ns, n)
			}
		}
		var build, all, one []time.Duration
		feasible := 0
		for range 5 {
			start := time.Now()
			a, err := structured.NewAllocator(ctx, allocatorFeatures, structured.AllocatedState{AllocatedDevices: sets.New[structured.DeviceID](),
				AllocatedSharedDeviceIDs: sets.New[structured.SharedDeviceID](), AggregatedCapacity: structured.NewConsumedCapacityCollection()},
				staticClasses{class}, sl, cel.NewCache(10, cel.Features{EnableConsumableCapacity: true}))
			if err != nil {
				t.Fatal(err)
			}
			build = append(build, time.Since(start))
			feasible = 0
			start = time.Now()
			for _, n := range ns {
				t0 := time.Now()
				res, err := a.Allocate(ctx, n, []*resourceapi.ResourceClaim{claim})
				if err != nil {
					t.Fatalf("allocating on %s: %v", n.Name, err)
				}
				if len(res) > 0 {
					feasible++
					if n.Name != targetNode {
						t.Fatalf("allocated on %s, want %s only", n.Name, targetNode)
					}
					one = append(one, time.Since(t0))
				}
			}
			all = append(all, time.Since(start))
		}
		if feasible != 1 {
			t.Fatalf("%d nodes feasible, want 1 (%s)", feasible, targetNode)
		}
		med := func(d []time.Duration) float64 {
			slices.Sort(d)
			return float64(d[len(d)/2].Microseconds()) / 1000
		}
		fmt.Printf("FLEET phase=allocator nodes=%d slices=%d devices=%d new_allocator_ms=%.2f filter_all_nodes_ms=%.1f filter_per_node_us=%.1f filter_target_ms=%.3f\n",
			len(ns), len(sl), devices*scale, med(build), med(all), med(all)*1000/float64(len(ns)), med(one))
	}
}

// staticClasses is the allocator's view of the classes: the one class.
type staticClasses []*resourceapi.DeviceClass

func (s staticClasses) List() ([]*resourceapi.DeviceClass, error) { return s, nil }

func (s staticClasses) Get(name string) (*resourceapi.DeviceClass, error) {
	for _, c := range s {
		if c.Name == name {
			return c, nil
		}
	}
	return nil, fmt.Errorf("no DeviceClass %q", name)
}
