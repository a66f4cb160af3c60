// Package manifest decodes Kubernetes manifests strictly into their real API
// types: an unknown or misspelt field, a duplicate key or a wrong type is an
// error, as the API server's strict field validation
// (https://kubernetes.io/docs/reference/using-api/api-concepts/#field-validation)
// and Istio's and Envoy Gateway's CRD schemas would report it. The EnvoyFilter
// patch value is decoded further, into the Envoy HTTP filter it inserts, with
// every typed_config resolved and go-control-plane's validators run.
package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	yamlv3 "gopkg.in/yaml.v3"
	istionet "istio.io/api/networking/v1alpha3"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	"sigs.k8s.io/yaml"

	// Every type an ext_proc filter's typed_config may name.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
)

// Object is one decoded manifest.
type Object struct {
	APIVersion, Kind string
	Name, Namespace  string
	// Typed is a pointer to the API type (e.g. *appsv1.Deployment). For an
	// EnvoyFilter it is *EnvoyFilter.
	Typed any
}

// EnvoyFilter is Istio's EnvoyFilter resource: Kubernetes metadata around
// the istio.io/api spec (a protobuf message), with the HTTP filters its
// patches insert decoded into go-control-plane's type.
type EnvoyFilter struct {
	Metadata metav1.ObjectMeta
	Spec     *istionet.EnvoyFilter
	// Filters holds, per config patch, the HTTP filter the patch value
	// describes (nil for a patch that is not an HTTP_FILTER insertion).
	Filters []*hcmv3.HttpFilter
}

// newTyped returns a pointer to the Go type of apiVersion/kind, or nil.
func newTyped(apiVersion, kind string) any {
	switch apiVersion + "/" + kind {
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}
	case "v1/Secret":
		return &corev1.Secret{}
	case "v1/Service":
		return &corev1.Service{}
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	case "autoscaling/v2/HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}
	case "monitoring.coreos.com/v1/ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}
	case "gateway.envoyproxy.io/v1alpha1/EnvoyExtensionPolicy":
		return &egv1a1.EnvoyExtensionPolicy{}
	case "gateway.networking.k8s.io/v1beta1/ReferenceGrant":
		return &gwv1beta1.ReferenceGrant{}
	}
	return nil
}

// SplitYAML splits a multi-document YAML stream into its non-empty
// documents (comments-only documents, as helm template emits, are dropped).
func SplitYAML(stream []byte) ([][]byte, error) {
	dec := yamlv3.NewDecoder(bytes.NewReader(stream))
	var out [][]byte
	for {
		var n yamlv3.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if len(n.Content) == 0 || (n.Content[0].Kind == yamlv3.ScalarNode && n.Content[0].Tag == "!!null") {
			continue
		}
		b, err := yamlv3.Marshal(&n)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
}

// Decode decodes one YAML document strictly into its API type.
func Decode(doc []byte) (*Object, error) {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	if head.APIVersion == "" || head.Kind == "" {
		return nil, errors.New("document has no apiVersion or kind")
	}
	o := &Object{APIVersion: head.APIVersion, Kind: head.Kind, Name: head.Metadata.Name, Namespace: head.Metadata.Namespace}
	where := fmt.Sprintf("%s %s/%s", o.Kind, o.Namespace, o.Name)
	if o.Name == "" {
		return nil, fmt.Errorf("%s: metadata.name is empty", where)
	}
	if o.APIVersion == "networking.istio.io/v1alpha3" && o.Kind == "EnvoyFilter" {
		ef, err := decodeEnvoyFilter(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		o.Typed = ef
		return o, nil
	}
	t := newTyped(o.APIVersion, o.Kind)
	if t == nil {
		return nil, fmt.Errorf("%s: no Go type known for %s %s", where, o.APIVersion, o.Kind)
	}
	// UnmarshalStrict: YAML to JSON, then a JSON decode that rejects
	// unknown fields and duplicate keys.
	if err := yaml.UnmarshalStrict(doc, t); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	o.Typed = t
	return o, nil
}

func decodeEnvoyFilter(doc []byte) (*EnvoyFilter, error) {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, err
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(js, &top); err != nil {
		return nil, err
	}
	for k := range top {
		switch k {
		case "apiVersion", "kind", "metadata", "spec":
		default:
			return nil, fmt.Errorf("unknown top-level field %q", k)
		}
	}
	ef := &EnvoyFilter{Spec: &istionet.EnvoyFilter{}}
	dec := json.NewDecoder(bytes.NewReader(top["metadata"]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ef.Metadata); err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	// protojson rejects unknown fields unless told otherwise.
	if err := protojson.Unmarshal(top["spec"], ef.Spec); err != nil {
		return nil, fmt.Errorf("spec: %w", err)
	}
	for i, p := range ef.Spec.GetConfigPatches() {
		if p.GetApplyTo() != istionet.EnvoyFilter_HTTP_FILTER || p.GetPatch().GetValue() == nil {
			ef.Filters = append(ef.Filters, nil)
			continue
		}
		vjs, err := protojson.Marshal(p.GetPatch().GetValue())
		if err != nil {
			return nil, err
		}
		hf := &hcmv3.HttpFilter{}
		if err := protojson.Unmarshal(vjs, hf); err != nil {
			return nil, fmt.Errorf("configPatches[%d].patch.value as an Envoy HttpFilter: %w", i, err)
		}
		n, err := ValidateTree(hf, fmt.Sprintf("configPatches[%d]", i))
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, fmt.Errorf("configPatches[%d]: the filter has no typed_config", i)
		}
		ef.Filters = append(ef.Filters, hf)
	}
	return ef, nil
}

type validator interface{ ValidateAll() error }

// ValidateTree runs go-control-plane's generated validators (the
// protoc-gen-validate rules Envoy enforces when it loads a config) on m and
// on every message packed in an Any below it; it returns how many Anys it
// resolved. An Any naming a type not linked into this binary is an error.
func ValidateTree(m proto.Message, where string) (int, error) {
	if v, ok := m.(validator); ok {
		if err := v.ValidateAll(); err != nil {
			return 0, fmt.Errorf("%s: %w", where, err)
		}
	}
	n := 0
	var errs []error
	var walk func(protoreflect.Message, string)
	walk = func(msg protoreflect.Message, path string) {
		if a, ok := msg.Interface().(*anypb.Any); ok {
			inner, err := a.UnmarshalNew()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: unresolved typed_config %s: %w", path, a.GetTypeUrl(), err))
				return
			}
			n++
			k, err := ValidateTree(inner, path+"<"+a.GetTypeUrl()+">")
			n += k
			if err != nil {
				errs = append(errs, err)
			}
			return
		}
		msg.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			p := path + "." + string(fd.Name())
			switch {
			case fd.IsList() && fd.Message() != nil:
				for i := 0; i < v.List().Len(); i++ {
					walk(v.List().Get(i).Message(), fmt.Sprintf("%s[%d]", p, i))
				}
			case fd.IsMap() && fd.MapValue().Message() != nil:
				v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
					walk(mv.Message(), p+"["+k.String()+"]")
					return true
				})
			case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
				walk(v.Message(), p)
			}
			return true
		})
	}
	walk(m.ProtoReflect(), where)
	return n, errors.Join(errs...)
}

// DecodeAll splits a stream and decodes every document.
func DecodeAll(stream []byte) ([]*Object, error) {
	docs, err := SplitYAML(stream)
	if err != nil {
		return nil, err
	}
	var out []*Object
	var errs []error
	for i, d := range docs {
		o, err := Decode(d)
		if err != nil {
			errs = append(errs, fmt.Errorf("document %d: %w", i, err))
			continue
		}
		out = append(out, o)
	}
	return out, errors.Join(errs...)
}

// Find returns the objects of kind.
func Find(objs []*Object, kind string) []*Object {
	var out []*Object
	for _, o := range objs {
		if strings.EqualFold(o.Kind, kind) {
			out = append(out, o)
		}
	}
	return out
}
