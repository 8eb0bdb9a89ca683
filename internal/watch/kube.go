package watch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/safeconduct/safeconduct/revocation"
)

const (
	kubeProbeInterval = 2 * time.Second
	kubeProbeTimeout  = 5 * time.Second
	kubeFlushInterval = time.Second
	// maxKubeObjects bounds the pods and service accounts held (and persisted).
	maxKubeObjects = 2_000_000
)

// kubePod is what the watcher keeps of a pod: where its tokens' identity comes from.
type kubePod struct {
	Namespace string            `json:"ns"`
	Name      string            `json:"name"`
	Subject   string            `json:"sub"`
	Attrs     map[string]string `json:"attrs"` // binding and instance attributes, non-empty values only
}

// kubeSA is a service account.
type kubeSA struct {
	Namespace string `json:"ns"`
	Name      string `json:"name"`
}

// kubeState is what was reported: pods and service accounts by UID.
type kubeState struct {
	Pods map[string]kubePod `json:"pods"`
	SAs  map[string]kubeSA  `json:"service_accounts"`
}

// saSubject is the sub claim of a service account's tokens.
func saSubject(ns, name string) string { return "system:serviceaccount:" + ns + ":" + name }

// podAttributes are the attributes the STS's kubernetes preset derives from a
// token bound to pod (kubernetes.io claims), restricted to names; empty values are
// left out, as the preset leaves them out.
func podAttributes(pod *corev1.Pod, names []string) map[string]string {
	all := map[string]string{
		"namespace":       pod.Namespace,
		"service_account": pod.Spec.ServiceAccountName,
		"pod":             pod.Name,
		"pod_uid":         string(pod.UID),
		"node":            pod.Spec.NodeName,
	}
	out := make(map[string]string, len(names))
	for _, n := range names {
		if v := all[n]; v != "" {
			out[n] = v
		}
	}
	return out
}

// KubeSource watches pods and service accounts with client-go informers (list +
// watch with resource versions; a relist after "too old" or an outage delivers
// the deletions it missed) and reports:
//   - a pod deleted or being deleted: revoke upstream, sub and bnd (the binding
//     fingerprint of the pod's attributes; binding_attributes include pod_uid, so
//     it is the pod's tokens and no other's);
//   - a pod added or whose binding or instance attributes changed: a change report,
//     so that the STS revokes the tokens of the instance's previous binding (a pod
//     replaced under the same name with a new UID, when instance_attributes is [pod]);
//   - a service account deleted: revoke upstream and sub (every token of it).
type KubeSource struct {
	cfg    *KubeConfig
	client kubernetes.Interface
	rep    *Reporter
	m      *Metrics
	log    *slog.Logger
	state  *stateFile
	names  []string // binding + instance attribute names

	mu       sync.Mutex
	reported kubeState
	dirty    bool
	live     map[string]kubePod // pods by UID as last seen (reports may be pending)
	saUIDs   map[string]string  // ns/name -> UID
	revoked  map[string]bool    // pod UIDs whose revoke was queued
	synced   bool
	probeErr error
}

// NewKubeSource builds the client from the kubeconfig (or in-cluster).
func NewKubeSource(cfg *KubeConfig, stateDir string, rep *Reporter, m *Metrics, log *slog.Logger) (*KubeSource, error) {
	var rc *rest.Config
	var err error
	if cfg.Kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	rc.UserAgent = "stswatch"
	rc.Timeout = 0 // watches; each probe has its own timeout
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	return newKubeSource(cfg, client, stateDir, rep, m, log)
}

func newKubeSource(cfg *KubeConfig, client kubernetes.Interface, stateDir string, rep *Reporter, m *Metrics, log *slog.Logger) (*KubeSource, error) {
	st, err := newStateFile(stateDir, "kubernetes-state.json")
	if err != nil {
		return nil, err
	}
	m.SourceUp(SourceKubernetes, false)
	names := append(append([]string(nil), cfg.BindingAttributes...), cfg.InstanceAttributes...)
	return &KubeSource{
		cfg: cfg, client: client, rep: rep, m: m, log: log.With(slog.String("source", SourceKubernetes)), state: st, names: names,
		reported: kubeState{Pods: map[string]kubePod{}, SAs: map[string]kubeSA{}},
		live:     map[string]kubePod{}, saUIDs: map[string]string{}, revoked: map[string]bool{},
	}, nil
}

// Ready is nil once the informers have synced and the API server answers.
func (k *KubeSource) Ready() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.synced {
		return errors.New("kubernetes: informers not synced yet")
	}
	return k.probeErr
}

// Run watches until ctx ends.
func (k *KubeSource) Run(ctx context.Context) error {
	var prev kubeState
	found, err := k.state.load(SourceKubernetes, &prev)
	if err != nil {
		return err
	}
	if found {
		k.mu.Lock()
		k.reported = prev
		if k.reported.Pods == nil {
			k.reported.Pods = map[string]kubePod{}
		}
		if k.reported.SAs == nil {
			k.reported.SAs = map[string]kubeSA{}
		}
		k.mu.Unlock()
		k.log.Info("resuming from the persisted state", slog.Int("pods", len(prev.Pods)), slog.Int("service_accounts", len(prev.SAs)))
	}

	namespaces := k.cfg.Namespaces
	if len(namespaces) == 0 {
		namespaces = []string{corev1.NamespaceAll}
	}
	var factories []informers.SharedInformerFactory
	var syncs []cache.InformerSynced
	for _, ns := range namespaces {
		f := informers.NewSharedInformerFactoryWithOptions(k.client, 0, informers.WithNamespace(ns))
		sas := f.Core().V1().ServiceAccounts().Informer()
		pods := f.Core().V1().Pods().Informer()
		for _, inf := range []cache.SharedIndexInformer{sas, pods} {
			_ = inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
				k.log.Warn("watch interrupted; client-go relists and resumes", slog.String("error", err.Error()))
			})
		}
		saReg, err := sas.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { k.saSeen(obj) },
			UpdateFunc: func(_, obj any) { k.saSeen(obj) },
			DeleteFunc: func(obj any) { k.saDeleted(ctx, obj) },
		})
		if err != nil {
			return err
		}
		podReg, err := pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { k.podSeen(ctx, obj) },
			UpdateFunc: func(_, obj any) { k.podSeen(ctx, obj) },
			DeleteFunc: func(obj any) { k.podDeleted(ctx, obj, true) },
		})
		if err != nil {
			return err
		}
		// Synced once the handlers (not only the caches) have seen the first list:
		// the resync below compares the state file with what they recorded.
		syncs = append(syncs, saReg.HasSynced, podReg.HasSynced)
		factories = append(factories, f)
	}
	for _, f := range factories {
		f.Start(ctx.Done())
	}
	defer func() {
		for _, f := range factories {
			f.Shutdown()
		}
	}()
	go k.probe(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), syncs...) {
		return nil
	}
	k.resync(ctx)
	k.mu.Lock()
	k.synced = true
	k.mu.Unlock()
	k.log.Info("informers synced")

	t := time.NewTicker(kubeFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			k.flush()
			return nil
		case <-t.C:
			k.flush()
		}
	}
}

// resync reports what the persisted state has and the first list has not: pods and
// service accounts deleted while the watcher was down (or whose revoke was not
// delivered before it stopped).
func (k *KubeSource) resync(ctx context.Context) {
	k.mu.Lock()
	var gonePods []string
	for uid := range k.reported.Pods {
		if _, ok := k.live[uid]; !ok && !k.revoked[uid] {
			gonePods = append(gonePods, uid)
		}
	}
	liveSA := map[string]bool{}
	for _, uid := range k.saUIDs {
		liveSA[uid] = true
	}
	var goneSAs []string
	for uid := range k.reported.SAs {
		if !liveSA[uid] {
			goneSAs = append(goneSAs, uid)
		}
	}
	k.mu.Unlock()
	for _, uid := range gonePods {
		k.mu.Lock()
		p := k.reported.Pods[uid]
		k.mu.Unlock()
		k.revokePod(ctx, uid, p, "kubernetes: pod "+p.Namespace+"/"+p.Name+" ("+uid+") deleted while the watcher was down")
	}
	for _, uid := range goneSAs {
		k.mu.Lock()
		sa := k.reported.SAs[uid]
		k.mu.Unlock()
		k.revokeSA(ctx, uid, sa, "while the watcher was down")
	}
}

// probe asks the API server for its version every few seconds: readiness follows.
func (k *KubeSource) probe(ctx context.Context) {
	for {
		pctx, cancel := context.WithTimeout(ctx, kubeProbeTimeout)
		_, err := k.client.Discovery().RESTClient().Get().AbsPath("/version").Do(pctx).Raw()
		cancel()
		if ctx.Err() != nil {
			return
		}
		k.mu.Lock()
		was := k.probeErr
		if err != nil {
			k.probeErr = fmt.Errorf("kubernetes: API server unreachable: %v", err)
		} else {
			k.probeErr = nil
		}
		up := k.synced && k.probeErr == nil
		k.mu.Unlock()
		k.m.SourceUp(SourceKubernetes, up)
		if err != nil && was == nil {
			k.log.Warn("API server unreachable; informers keep their resource version and catch up when it returns", slog.String("error", err.Error()))
		} else if err == nil && was != nil {
			k.log.Info("API server reachable again")
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(kubeProbeInterval):
		}
	}
}

func (k *KubeSource) saSeen(obj any) {
	sa, ok := obj.(*corev1.ServiceAccount)
	if !ok {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.saUIDs[sa.Namespace+"/"+sa.Name] = string(sa.UID)
	if _, ok := k.reported.SAs[string(sa.UID)]; !ok && len(k.reported.SAs) < maxKubeObjects {
		k.reported.SAs[string(sa.UID)] = kubeSA{Namespace: sa.Namespace, Name: sa.Name}
		k.dirty = true
	}
}

func (k *KubeSource) saDeleted(ctx context.Context, obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	sa, ok := obj.(*corev1.ServiceAccount)
	if !ok {
		return
	}
	k.mu.Lock()
	if k.saUIDs[sa.Namespace+"/"+sa.Name] == string(sa.UID) {
		delete(k.saUIDs, sa.Namespace+"/"+sa.Name)
	}
	k.mu.Unlock()
	k.revokeSA(ctx, string(sa.UID), kubeSA{Namespace: sa.Namespace, Name: sa.Name}, "")
}

func (k *KubeSource) revokeSA(ctx context.Context, uid string, sa kubeSA, when string) {
	sub := saSubject(sa.Namespace, sa.Name)
	sel, err := revocation.NewSelector(revocation.KeyUpstream, k.cfg.Upstream, revocation.KeySubject, sub)
	if err != nil {
		k.log.Error("cannot build a selector; not reported", slog.String("sub", sub), slog.String("error", err.Error()))
		k.m.reports.WithLabelValues(SourceKubernetes, KindRevoke, OutcomeRejected).Inc()
		return
	}
	k.m.Event(SourceKubernetes, "serviceaccount_deleted")
	reason := "kubernetes: service account " + sa.Namespace + "/" + sa.Name + " (" + uid + ") deleted"
	if when != "" {
		reason += " " + when
	}
	k.log.Info("revoking", slog.String("event", "serviceaccount_deleted"), slog.String("sub", sub), slog.String("uid", uid))
	t, err := k.rep.Report(ctx, Report{Kind: KindRevoke, Source: SourceKubernetes, Upstream: k.cfg.Upstream, Subject: sub, Selector: sel.String(), Reason: reason})
	if err != nil {
		return
	}
	k.onDelivered(ctx, t, func() {
		delete(k.reported.SAs, uid)
		k.dirty = true
	})
}

// podSeen handles an added or updated pod.
func (k *KubeSource) podSeen(ctx context.Context, obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.Spec.ServiceAccountName == "" {
		return
	}
	uid := string(pod.UID)
	if pod.DeletionTimestamp != nil {
		// Being deleted: its tokens go now, not when the kubelet has finished.
		k.podDeleted(ctx, pod, false)
		return
	}
	k.mu.Lock()
	p := kubePod{Namespace: pod.Namespace, Name: pod.Name, Subject: saSubject(pod.Namespace, pod.Spec.ServiceAccountName),
		Attrs: podAttributes(pod, k.names)}
	prev, seen := k.live[uid]
	if len(k.live) >= maxKubeObjects && !seen {
		k.mu.Unlock()
		k.log.Error("over the pod limit; pod not watched", slog.Int("limit", maxKubeObjects))
		return
	}
	k.live[uid] = p
	rep, wasReported := k.reported.Pods[uid]
	k.mu.Unlock()
	if seen && maps.Equal(prev.Attrs, p.Attrs) {
		return
	}
	if wasReported && maps.Equal(rep.Attrs, p.Attrs) {
		return // reported before a restart, unchanged
	}
	k.m.Event(SourceKubernetes, "pod_changed")
	t, err := k.rep.Report(ctx, Report{Kind: KindChange, Source: SourceKubernetes, Upstream: k.cfg.Upstream, Subject: p.Subject,
		Attributes: p.Attrs, Instance: uid})
	if err != nil {
		return
	}
	k.onDelivered(ctx, t, func() {
		if !k.revoked[uid] {
			k.reported.Pods[uid] = p
			k.dirty = true
		}
	})
}

// onDelivered runs update, holding k.mu, once the report behind t is delivered
// (the state file then remembers it), unless ctx ends first.
func (k *KubeSource) onDelivered(ctx context.Context, t *Ticket, update func()) {
	go func() {
		select {
		case <-t.Done():
			k.mu.Lock()
			update()
			k.mu.Unlock()
		case <-ctx.Done():
		}
	}()
}

// podDeleted revokes a pod's tokens once, whether it is seen terminating
// (DeletionTimestamp set) or gone (final: no event about its UID follows).
func (k *KubeSource) podDeleted(ctx context.Context, obj any, final bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.Spec.ServiceAccountName == "" {
		return
	}
	uid := string(pod.UID)
	k.mu.Lock()
	p, ok := k.live[uid]
	if !ok {
		p = kubePod{Namespace: pod.Namespace, Name: pod.Name, Subject: saSubject(pod.Namespace, pod.Spec.ServiceAccountName),
			Attrs: podAttributes(pod, k.names)}
	}
	already := k.revoked[uid]
	k.revoked[uid] = true
	if already && final {
		delete(k.revoked, uid)
	}
	k.mu.Unlock()
	if already {
		return
	}
	k.revokePod(ctx, uid, p, "kubernetes: pod "+pod.Namespace+"/"+pod.Name+" ("+uid+") deleted")
}

// revokePod revokes the tokens bound to the pod: upstream, sub and the binding
// fingerprint of its attributes (which include pod_uid).
func (k *KubeSource) revokePod(ctx context.Context, uid string, p kubePod, reason string) {
	k.mu.Lock()
	k.revoked[uid] = true
	k.mu.Unlock()
	bnd := revocation.Fingerprint(p.Attrs, k.cfg.BindingAttributes)
	sel, err := revocation.NewSelector(revocation.KeyUpstream, k.cfg.Upstream, revocation.KeySubject, p.Subject, revocation.KeyBinding, bnd)
	if err != nil || bnd == "" {
		k.log.Error("cannot build a selector for this pod; not reported", slog.String("pod", p.Namespace+"/"+p.Name), slog.String("uid", uid))
		k.m.reports.WithLabelValues(SourceKubernetes, KindRevoke, OutcomeRejected).Inc()
		return
	}
	k.m.Event(SourceKubernetes, "pod_deleted")
	k.log.Info("revoking", slog.String("event", "pod_deleted"), slog.String("pod", p.Namespace+"/"+p.Name), slog.String("uid", uid))
	t, err := k.rep.Report(ctx, Report{Kind: KindRevoke, Source: SourceKubernetes, Upstream: k.cfg.Upstream, Subject: p.Subject,
		Selector: sel.String(), Reason: reason})
	if err != nil {
		return
	}
	k.onDelivered(ctx, t, func() {
		delete(k.reported.Pods, uid)
		delete(k.live, uid)
		k.dirty = true
	})
}

// flush persists the reported state when it changed.
func (k *KubeSource) flush() {
	k.mu.Lock()
	if !k.dirty {
		k.mu.Unlock()
		return
	}
	snap := kubeState{Pods: maps.Clone(k.reported.Pods), SAs: maps.Clone(k.reported.SAs)}
	k.dirty = false
	k.mu.Unlock()
	if err := k.state.save(SourceKubernetes, &snap); err != nil {
		k.log.Error("cannot persist the state; deletions during a restart may be missed until it can", slog.String("error", err.Error()))
		k.mu.Lock()
		k.dirty = true
		k.mu.Unlock()
	}
}
