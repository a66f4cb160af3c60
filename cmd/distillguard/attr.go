package main

import "go.opentelemetry.io/otel/attribute"

func resultAttr(r string) attribute.KeyValue { return attribute.String("result", r) }
