-- expect: tests/spec_fail/no_model.lua:1: the spec declares no model: add model "Name" { inputs = ..., forward = ... }
fabric { accelerator = "cpu" }
