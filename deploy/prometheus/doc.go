// Package prometheus holds distillguard's Prometheus rules
// (distillguard-rules.yaml, unit-tested by distillguard-rules_test.yaml) and
// the tests that tie them, and the Grafana dashboard in ../grafana, to what
// the server really exports.
package prometheus
