//! probes.yaml: types, parsing with file:line:column errors, and validation. Nothing else.
