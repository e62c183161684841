#!/usr/bin/env python3
"""Regenerates pkg/protobuf/src/fields.txt, the wire schema of the built-in Kubernetes types.

Field numbers and wire types come from the prost attributes of the `k8s-pb` crate; the JSON
name of every field comes from the serde field table of `k8s-openapi` (v1_33). Both crates
are read from the local cargo registry (run `cargo fetch` with them as dependencies first):

    python3 pkg/protobuf/gen/gen.py ~/.cargo/registry/src/*/k8s-pb-0.9.0 \
        ~/.cargo/registry/src/*/k8s-openapi-0.29.0 > pkg/protobuf/src/fields.txt

Output: one `@module.path.Message` line per message followed by one line per field:
`TAG JSON_NAME KIND [TYPE]` (JSON_NAME `-`: an embedded struct inlined in JSON), where KIND is s (string), y (bytes), b (bool), i (int32),
l (int64), d (double) or m (message, TYPE = full name), prefixed by `*` when repeated and
by `M` (map with string keys) when a map. A message line ending in ` unwrap` is a Go slice
type (e.g. ExtraValue) whose JSON form is its only field.
"""
import os
import re
import sys

pb_root = os.path.join(sys.argv[1], "src")
oa_root = os.path.join(sys.argv[2], "src", "v1_33")

KINDS = {"string": "s", "bytes": "y", "bool": "b", "int32": "i", "int64": "l", "double": "d",
         "message": "m"}


def norm(name):
    return name.replace("r#", "").replace("_", "").lower()


def openapi_names(module):
    """struct name -> {rust field name -> json name} for one k8s-openapi module dir."""
    d = os.path.join(oa_root, *module)
    out = {}
    if not os.path.isdir(d):
        return out
    for f in os.listdir(d):
        if not f.endswith(".rs") or f == "mod.rs":
            continue
        text = open(os.path.join(d, f)).read()
        m = re.search(r"pub struct (\w+) \{", text)
        if not m:
            continue
        fields = dict((rust, js) for js, rust in re.findall(r'"([^"]+)" => Field::Key_(\w+),', text))
        out[m.group(1).lower()] = fields
    return out


def resolve(module, path):
    parts = path.split("::")
    if len(parts) == 1:
        return ".".join(module + parts)
    mod = list(module)
    while parts and parts[0] == "super":
        parts.pop(0)
        mod.pop()
    return ".".join(mod + parts)


def inner_type(ty):
    ty = re.sub(r"\s+", "", ty).rstrip(",").replace(",>", ">")
    for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<",
                    "::prost::alloc::boxed::Box<"):
        while ty.startswith(wrapper):
            ty = ty[len(wrapper):-1].strip()
    if "BTreeMap<" in ty:
        ty = ty[ty.index("BTreeMap<") + len("BTreeMap<"):-1]
        ty = ty.split(",", 1)[1].rstrip(",")
    return ty


messages = []
missing = 0
for dirpath, _, files in sorted(os.walk(pb_root)):
    if "mod.rs" not in files:
        continue
    module = os.path.relpath(dirpath, pb_root).split(os.sep)
    if module == ["."]:
        continue
    if not os.path.isdir(os.path.join(oa_root, *module)) and module[-1].startswith("v"):
        continue  # a group-version Kubernetes 1.33 does not serve
    text = open(os.path.join(dirpath, "mod.rs")).read()
    names = openapi_names(module)
    for m in re.finditer(r"pub struct (\w+) \{(\}|.*?\n\})", text, re.S):
        struct, body = m.group(1), m.group(2)[:-1]
        fields = re.findall(r"#\[prost\(([^\]]*)\)\]\s*pub (r#\w+|\w+):\s*(.*?),\s*(?=///|#\[|\Z)", body, re.S)
        json_names = names.get(struct.lower())
        lines = []
        for attr, rust, ty in fields:
            tag = re.search(r'tag = "(\d+)"', attr).group(1)
            if attr.startswith("btree_map"):
                val = re.search(r'btree_map = "string, (\w+)"', attr).group(1)
                kind = "M" + KINDS[val]
            else:
                kind = KINDS[attr.split(",")[0].split("=")[0].strip()]
                if "repeated" in attr:
                    kind = "*" + kind
            js = None
            if json_names is not None:
                js = json_names.get(rust.replace("r#", "")) or json_names.get(rust.replace("r#", "") + "_")
                if js is None:
                    cands = [j for r, j in json_names.items() if norm(r) == norm(rust)]
                    js = cands[0] if len(cands) == 1 else None
            if struct == "JsonSchemaProps" and rust in ("r#ref", "schema"):
                js = "$" + rust.replace("r#", "")
            if js is None and json_names is not None and kind == "m" and \
                    norm(inner_type(ty).split("::")[-1]).endswith(norm(rust)):
                js = "-"  # an embedded Go struct: its fields are inlined in the JSON form
            if js is None:
                # No k8s-openapi struct (an internal or newer type): lowerCamel of the name.
                head, *rest = rust.replace("r#", "").split("_")
                js = head + "".join(p[:1].upper() + p[1:] for p in rest)
                if json_names is not None:
                    missing += 1
                    print(f"warning: no JSON name for {'.'.join(module)}.{struct}.{rust}", file=sys.stderr)
            line = f"{tag} {js} {kind}"
            if kind.endswith("m"):
                line += " " + resolve(module, inner_type(ty))
            lines.append(line)
        head = "@" + ".".join(module + [struct])
        if json_names is None and len(fields) == 1 and lines[0].split()[2].startswith("*"):
            head += " unwrap"
        messages.append(head + "\n" + "".join(l + "\n" for l in lines))

sys.stdout.write("# Generated by pkg/protobuf/gen/gen.py from k8s-pb 0.9.0 and k8s-openapi 0.29.0 (v1_33).\n")
sys.stdout.write("".join(messages))
print(f"{len(messages)} messages, {missing} fields without a JSON name", file=sys.stderr)
