package server

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatstream/chatstream/delivery"
	"github.com/chatstream/chatstream/streaming"
	"github.com/chatstream/chatstream/worker"
)

// dashboardFile is the Grafana dashboard shipped for chatstream's metrics.
const dashboardFile = "../deploy/grafana/chatstream.json"

// TestDashboard checks deploy/grafana/chatstream.json: it is JSON, its panel
// ids are unique, it queries its ${datasource} variable, and every metric
// its queries name is one chatstream defines, with the labels it has.
func TestDashboard(t *testing.T) {
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardFile, err)
	}
	panels := d.allPanels()
	defined := definedMetrics(t)

	t.Run("panel ids", func(t *testing.T) {
		seen := map[int]string{}
		for _, p := range panels {
			if p.ID <= 0 {
				t.Errorf("panel %q has no id", p.Title)
				continue
			}
			if other, ok := seen[p.ID]; ok {
				t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
			}
			seen[p.ID] = p.Title
		}
	})

	t.Run("datasource", func(t *testing.T) {
		var found bool
		for _, v := range d.Templating.List {
			if v.Name == "datasource" && v.Type == "datasource" && string(v.Query) == `"prometheus"` {
				found = true
			}
		}
		if !found {
			t.Error(`no templating variable "datasource" of type datasource querying "prometheus"`)
		}
		for _, p := range panels {
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q does not use ${datasource}", p.Title)
			}
			for _, tg := range p.Targets {
				if tg.Datasource != nil && tg.Datasource.UID != "${datasource}" {
					t.Errorf("panel %q, target %s does not use ${datasource}", p.Title, tg.RefID)
				}
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		exprs := 0
		used := map[string]bool{}
		check := func(where, expr string, grouping bool) { checkQuery(t, defined, where, expr, grouping, used) }
		for _, p := range panels {
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("panel %q, target %s: empty expr", p.Title, tg.RefID)
					continue
				}
				exprs++
				check(fmt.Sprintf("panel %q, target %s", p.Title, tg.RefID), tg.Expr, true)
			}
		}
		for _, v := range d.Templating.List {
			if v.Type != "query" {
				continue
			}
			exprs++
			q := v.query()
			where := fmt.Sprintf("variable %q", v.Name)
			if m := labelValues.FindStringSubmatch(q); m != nil {
				check(where, m[1], false)
				labels, err := defined.check(strings.SplitN(m[1], "{", 2)[0])
				if err == nil && !labels[m[2]] {
					t.Errorf("%s: %s has no label %q", where, m[1], m[2])
				}
				continue
			}
			check(where, q, true)
		}
		names := make([]string, 0, len(used))
		for n := range used {
			names = append(names, n)
		}
		sort.Strings(names)
		if !t.Failed() {
			t.Logf("%d panels, %d queries; %d series names, all among the %d metric families chatstream defines: %s",
				len(panels), exprs, len(names), len(defined), strings.Join(names, " "))
		}
	})
}

// checkQuery checks that the series selectors of PromQL expr name metrics of
// fs with labels they have and, if grouping, that its by/without/on/ignoring
// labels belong to one of them; used collects the names.
func checkQuery(t *testing.T, fs families, where, expr string, grouping bool, used map[string]bool) {
	t.Helper()
	refs, groups, err := promQLRefs(expr)
	if err != nil {
		t.Errorf("%s: %v in %q", where, err, expr)
		return
	}
	if len(refs) == 0 {
		t.Errorf("%s: no metric in %q", where, expr)
	}
	allowed := map[string]bool{}
	for _, r := range refs {
		labels, err := fs.check(r.name)
		if err != nil {
			t.Errorf("%s: %v", where, err)
			continue
		}
		used[r.name] = true
		for _, l := range r.labels {
			if !labels[l] {
				t.Errorf("%s: %s has no label %q", where, r.name, l)
			}
		}
		for l := range labels {
			allowed[l] = true
		}
	}
	if grouping {
		for _, l := range groups {
			if !allowed[l] {
				t.Errorf("%s: no metric of %q has label %q", where, expr, l)
			}
		}
	}
}

// TestDeployGuide_AlertRules checks the alert rules that docs/DEPLOY.md
// suggests as TestDashboard checks the dashboard: every expr of its yaml
// blocks names metrics chatstream defines (or Prometheus's own up).
func TestDeployGuide_AlertRules(t *testing.T) {
	raw, err := os.ReadFile("../docs/DEPLOY.md")
	if err != nil {
		t.Fatal(err)
	}
	fs := definedMetrics(t)
	fs["up"] = family{typ: "GAUGE", labels: map[string]bool{}} // every scrape target's
	exprs := yamlExprs(string(raw))
	if len(exprs) == 0 {
		t.Fatal("no expr in the yaml blocks of docs/DEPLOY.md")
	}
	used := map[string]bool{}
	for i, e := range exprs {
		checkQuery(t, fs, fmt.Sprintf("DEPLOY.md rule %d", i+1), e, true, used)
	}
	t.Logf("%d alert expressions, %d metric names", len(exprs), len(used))
}

// yamlExprs returns the expr values of the ```yaml blocks of a Markdown
// text: inline, or the indented lines of a block scalar (expr: |).
func yamlExprs(md string) []string {
	var exprs []string
	in := false
	lines := strings.Split(md, "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		switch trimmed := strings.TrimSpace(line); {
		case strings.HasPrefix(trimmed, "```"):
			in = trimmed == "```yaml"
			continue
		case !in || !strings.HasPrefix(trimmed, "expr:"):
			continue
		}
		v := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "expr:"))
		if v != "|" && v != ">" {
			exprs = append(exprs, v)
			continue
		}
		indent := len(line) - len(strings.TrimLeft(line, " "))
		var block []string
		for i+1 < len(lines) {
			next := lines[i+1]
			if strings.TrimSpace(next) != "" && len(next)-len(strings.TrimLeft(next, " ")) <= indent {
				break
			}
			block = append(block, strings.TrimSpace(next))
			i++
		}
		exprs = append(exprs, strings.Join(block, " "))
	}
	return exprs
}

// TestPromQLRefs checks the query reader the dashboard test relies on.
func TestPromQLRefs(t *testing.T) {
	for _, c := range []struct {
		expr   string
		refs   string // name{labels} …
		groups string
	}{
		{`sum(chatstream_websockets_open)`, "chatstream_websockets_open", ""},
		{`sum by (instance) (rate(chatstream_chunks_appended_total{job=~"$job"}[$__rate_interval]))`,
			"chatstream_chunks_appended_total{job}", "instance"},
		{`histogram_quantile(0.99, sum by (le) (rate(chatstream_job_queue_wait_seconds_bucket{instance=~"${instance}"}[5m])))`,
			"chatstream_job_queue_wait_seconds_bucket{instance}", "le"},
		{`sum(rate(a_total{code="5.."}[1m] offset 1h)) / ignoring(code) sum(rate(b_total[1m])) > 0.05`,
			"a_total{code} b_total", "code"},
		{`sum(rate(x_total{route!~".*/events|/v1/ai-sdk/.*", a="b\"c"}[1m])) without (method) and on (instance) up == bool 1e3`,
			"x_total{route,a} up", "method instance"},
		{"max_over_time(go_goroutines[1h:5m]) # a comment naming not_a_metric", "go_goroutines", ""},
		{`label_replace(y, "dst", "$1", "src", "(.*)")`, "y", ""},
	} {
		refs, groups, err := promQLRefs(c.expr)
		if err != nil {
			t.Errorf("%q: %v", c.expr, err)
			continue
		}
		var got []string
		for _, r := range refs {
			s := r.name
			if len(r.labels) > 0 {
				s += "{" + strings.Join(r.labels, ",") + "}"
			}
			got = append(got, s)
		}
		if g := strings.Join(got, " "); g != c.refs {
			t.Errorf("%q: refs %q, want %q", c.expr, g, c.refs)
		}
		if g := strings.Join(groups, " "); g != c.groups {
			t.Errorf("%q: grouping labels %q, want %q", c.expr, g, c.groups)
		}
	}
	for _, bad := range []string{`rat(x[1m])`, `{__name__="x"}`, `sum(x`, `x{a="b}`} {
		if _, _, err := promQLRefs(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// The dashboard's JSON, as far as the test reads it.
type dashboard struct {
	Panels     []panel `json:"panels"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int         `json:"id"`
	Title      string      `json:"title"`
	Type       string      `json:"type"`
	Datasource *datasource `json:"datasource"`
	Targets    []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type variable struct {
	Name  string          `json:"name"`
	Type  string          `json:"type"`
	Query json.RawMessage `json:"query"` // a string, or {"query": …}
}

func (v variable) query() string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	_ = json.Unmarshal(v.Query, &o)
	return o.Query
}

// allPanels returns the panels, those inside collapsed rows included.
func (d dashboard) allPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

var labelValues = regexp.MustCompile(`^\s*label_values\(\s*(.+?)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)

// family is a metric family chatstream defines: its type and labels.
type family struct {
	typ    string // COUNTER, GAUGE, HISTOGRAM, SUMMARY, UNTYPED
	labels map[string]bool
}

type families map[string]family

// check returns the labels a query may use on series name, or why name is
// no series chatstream serves.
func (fs families) check(name string) (map[string]bool, error) {
	withTarget := func(f family, extra ...string) map[string]bool {
		m := map[string]bool{"job": true, "instance": true}
		for l := range f.labels {
			m[l] = true
		}
		for _, l := range extra {
			m[l] = true
		}
		return m
	}
	if f, ok := fs[name]; ok {
		switch f.typ {
		case "HISTOGRAM":
			return nil, fmt.Errorf("%s is a histogram: query %[1]s_bucket, %[1]s_sum or %[1]s_count", name)
		case "SUMMARY":
			return withTarget(f, "quantile"), nil
		}
		return withTarget(f), nil
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		f, ok := fs[base]
		switch {
		case ok && f.typ == "HISTOGRAM" && suffix == "_bucket":
			return withTarget(f, "le"), nil
		case ok && (f.typ == "HISTOGRAM" || f.typ == "SUMMARY") && suffix != "_bucket":
			return withTarget(f), nil
		case ok:
			return nil, fmt.Errorf("%s: %s is a %s, it has no %s series", name, base, strings.ToLower(f.typ), suffix)
		}
	}
	return nil, fmt.Errorf("%s is not a metric chatstream defines", name)
}

// recorder is a Registerer that registers into reg and keeps every
// collector, so that their Descs can be read: a Gather alone misses the
// vectors that have no series yet.
type recorder struct {
	reg        *prometheus.Registry
	collectors []prometheus.Collector
}

func (r *recorder) Register(c prometheus.Collector) error {
	if err := r.reg.Register(c); err != nil {
		return err
	}
	r.collectors = append(r.collectors, c)
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r *recorder) Unregister(c prometheus.Collector) bool { return r.reg.Unregister(c) }

var (
	descName   = regexp.MustCompile(`fqName: "([^"]*)"`)
	descLabels = regexp.MustCompile(`variableLabels: \{([^}]*)\}\}$`)
)

// definedMetrics returns every metric family a node serves on /metrics:
// the registry of NewRegistry (Go and process collectors) with the
// metrics app.Start registers into it — the server's, the Redis adapter's,
// the workers' and the delivery's. One registry for all, as app.Start has
// it, so that a name defined twice fails here too.
func definedMetrics(t *testing.T) families {
	t.Helper()
	rec := &recorder{reg: NewRegistry()}
	newHTTPMetrics(rec)
	streaming.NewMetrics(rec)
	worker.NewMetrics(rec)
	delivery.NewMetrics(rec)

	fs := families{}
	mfs, err := rec.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		f := family{typ: mf.GetType().String(), labels: map[string]bool{}}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				f.labels[lp.GetName()] = true
			}
		}
		fs[mf.GetName()] = f
	}
	var described []string // families that Gather did not show
	for _, c := range rec.collectors {
		ch := make(chan *prometheus.Desc)
		go func() { c.Describe(ch); close(ch) }()
		for desc := range ch {
			s := desc.String()
			m := descName.FindStringSubmatch(s)
			if m == nil {
				t.Fatalf("cannot read the name of %s", s)
			}
			name := m[1]
			f, ok := fs[name]
			if !ok {
				f = family{typ: vecType(c), labels: map[string]bool{}}
				described = append(described, name)
			}
			if l := descLabels.FindStringSubmatch(s); l != nil && l[1] != "" {
				for _, label := range strings.Split(l[1], ",") {
					label = strings.TrimSuffix(strings.TrimPrefix(label, "c("), ")")
					f.labels[label] = true
				}
			}
			fs[name] = f
		}
	}
	t.Logf("%d metric families; %d of them (vectors without series) only from their Descs: %s",
		len(fs), len(described), strings.Join(described, " "))
	return fs
}

// vecType is the type of a vector's family, which Gather does not show
// while the vector has no series.
func vecType(c prometheus.Collector) string {
	switch c.(type) {
	case *prometheus.CounterVec:
		return "COUNTER"
	case *prometheus.GaugeVec:
		return "GAUGE"
	case *prometheus.HistogramVec:
		return "HISTOGRAM"
	case *prometheus.SummaryVec:
		return "SUMMARY"
	}
	return "UNTYPED"
}

// promRef is a series selector of a query: a metric name and the labels
// its matchers name.
type promRef struct {
	name   string
	labels []string
}

// promQLKeywords are words of PromQL that are neither metrics nor functions.
var promQLKeywords = []string{"and", "or", "unless", "bool", "offset", "inf", "nan", "start", "end", "atan2"}

// promQLGrouping are the modifiers followed by a list of labels.
var promQLGrouping = []string{"by", "without", "on", "ignoring", "group_left", "group_right"}

// promQLFunctions are PromQL's functions and aggregation operators.
var promQLFunctions = strings.Fields(`
	sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio
	abs absent absent_over_time ceil changes clamp clamp_max clamp_min day_of_month day_of_week
	day_of_year days_in_month delta deriv exp floor histogram_avg histogram_count histogram_fraction
	histogram_quantile histogram_stddev histogram_stdvar histogram_sum hour idelta increase irate
	label_join label_replace ln log2 log10 minute month predict_linear rate resets round scalar sgn
	sort sort_desc sort_by_label sort_by_label_desc sqrt time timestamp vector year
	avg_over_time min_over_time max_over_time sum_over_time count_over_time quantile_over_time
	stddev_over_time stdvar_over_time last_over_time present_over_time mad_over_time
	acos acosh asin asinh atan atanh cos cosh sin sinh tan tanh deg pi rad`)

// promQLRefs reads a PromQL query (with Grafana's $variables) far enough to
// name its series selectors and the labels of its by/without/on/ignoring
// clauses. It is no full parser: it knows strings, comments, durations,
// ranges, matchers and function calls, and refuses a selector without a
// metric name, an unknown function and unbalanced brackets.
func promQLRefs(expr string) (refs []promRef, groups []string, err error) {
	s := expr
	i := 0
	depth := 0
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	skipSpace := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
			i++
		}
	}
	ident := func() string {
		start := i
		for i < len(s) && isIdent(s[i]) {
			i++
		}
		return s[start:i]
	}
	skipString := func() error {
		q := s[i]
		for i++; i < len(s); i++ {
			switch {
			case s[i] == '\\' && q != '`':
				i++
			case s[i] == q:
				i++
				return nil
			}
		}
		return fmt.Errorf("unterminated string")
	}
	// matchers reads {a="b", c=~"d"} and returns the label names.
	matchers := func() ([]string, error) {
		var labels []string
		i++ // {
		for {
			skipSpace()
			if i >= len(s) {
				return nil, fmt.Errorf("unterminated matchers")
			}
			if s[i] == '}' {
				i++
				return labels, nil
			}
			if s[i] == ',' {
				i++
				continue
			}
			if !isIdentStart(s[i]) {
				return nil, fmt.Errorf("bad matcher at %q", s[i:])
			}
			labels = append(labels, ident())
			skipSpace()
			for i < len(s) && strings.IndexByte("=!~", s[i]) >= 0 {
				i++
			}
			skipSpace()
			if i >= len(s) || s[i] != '"' && s[i] != '\'' && s[i] != '`' {
				return nil, fmt.Errorf("matcher without a string value")
			}
			if err := skipString(); err != nil {
				return nil, err
			}
		}
	}
	for i < len(s) {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			if err := skipString(); err != nil {
				return nil, nil, err
			}
		case c == '[':
			end := strings.IndexByte(s[i:], ']')
			if end < 0 {
				return nil, nil, fmt.Errorf("unterminated range")
			}
			i += end + 1
		case c == '{':
			return nil, nil, fmt.Errorf("a selector without a metric name")
		case c == '$':
			// A Grafana variable: $name, ${name}, $__rate_interval.
			i++
			if i < len(s) && s[i] == '{' {
				end := strings.IndexByte(s[i:], '}')
				if end < 0 {
					return nil, nil, fmt.Errorf("unterminated variable")
				}
				i += end + 1
			} else {
				ident()
			}
		case c >= '0' && c <= '9' || c == '.':
			// A number, or a duration (5m, 1h30m, 1e3).
			for i < len(s) && (isIdent(s[i]) || s[i] == '.') {
				i++
			}
		case c == '(':
			depth++
			i++
		case c == ')':
			depth--
			if depth < 0 {
				return nil, nil, fmt.Errorf("unbalanced parentheses")
			}
			i++
		case isIdentStart(c):
			w := ident()
			lw := strings.ToLower(w)
			switch {
			case slices.Contains(promQLGrouping, lw):
				skipSpace()
				if i < len(s) && s[i] == '(' {
					end := strings.IndexByte(s[i:], ')')
					if end < 0 {
						return nil, nil, fmt.Errorf("unterminated label list")
					}
					for _, l := range strings.Split(s[i+1:i+end], ",") {
						if l = strings.TrimSpace(l); l != "" {
							groups = append(groups, l)
						}
					}
					i += end + 1
				}
			case slices.Contains(promQLKeywords, lw):
			default:
				skipSpace()
				if i < len(s) && s[i] == '(' {
					if !slices.Contains(promQLFunctions, w) {
						return nil, nil, fmt.Errorf("unknown function %s", w)
					}
					continue
				}
				if slices.Contains(promQLFunctions, w) && groupingNext(s[i:]) {
					continue // an aggregation written sum by (…) (…)
				}
				r := promRef{name: w}
				if i < len(s) && s[i] == '{' {
					if r.labels, err = matchers(); err != nil {
						return nil, nil, err
					}
				}
				refs = append(refs, r)
			}
		default:
			i++
		}
	}
	if depth != 0 {
		return nil, nil, fmt.Errorf("unbalanced parentheses")
	}
	return refs, groups, nil
}

// groupingNext reports whether rest starts with the word by or without.
func groupingNext(rest string) bool {
	for _, w := range []string{"by", "without"} {
		if strings.HasPrefix(rest, w) && (len(rest) == len(w) || !isPromIdent(rest[len(w)])) {
			return true
		}
	}
	return false
}

func isPromIdent(c byte) bool {
	return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
