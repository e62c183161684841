use super::*;
use serde_json::json;

/// A minimal protobuf writer for building test bodies.
#[derive(Default)]
struct W(Vec<u8>);

impl W {
    fn varint(&mut self, mut v: u64) -> &mut Self {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(b);
                return self;
            }
            self.0.push(b | 0x80);
        }
    }
    fn int(&mut self, tag: u32, v: i64) -> &mut Self {
        self.varint(u64::from(tag) << 3).varint(v as u64)
    }
    fn bytes(&mut self, tag: u32, b: &[u8]) -> &mut Self {
        self.varint((u64::from(tag) << 3) | 2)
            .varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    fn str(&mut self, tag: u32, s: &str) -> &mut Self {
        self.bytes(tag, s.as_bytes())
    }
    fn msg(&mut self, tag: u32, f: impl FnOnce(&mut W)) -> &mut Self {
        let mut inner = W::default();
        f(&mut inner);
        self.bytes(tag, &inner.0)
    }
}

fn envelope(api_version: &str, kind: &str, raw: &W) -> Vec<u8> {
    let mut w = W::default();
    w.msg(1, |t| {
        t.str(1, api_version).str(2, kind);
    })
    .bytes(2, &raw.0)
    .str(3, "")
    .str(4, "");
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&w.0);
    out
}

#[test]
fn the_generated_schema_parses_and_knows_the_common_kinds() {
    let s = Schema::get().expect("schema");
    for (av, kind) in [
        ("v1", "ConfigMap"),
        ("v1", "Pod"),
        ("apps/v1", "Deployment"),
        ("batch/v1", "CronJob"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("networking.k8s.io/v1", "Ingress"),
        ("storage.k8s.io/v1", "CSIDriver"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        ("policy/v1", "Eviction"),
        ("v1", "DeleteOptions"),
        ("apps/v1", "DeleteOptions"),
    ] {
        assert!(message_for(s, av, kind).is_some(), "{av} {kind}");
    }
}

#[test]
fn client_go_pod_bytes_decode() {
    // The start of a Pod as client-go marshals it (from upstream's clientset content-type
    // test): every non-pointer field of ObjectMeta is on the wire, empty.
    let body = [
        0x6b, 0x38, 0x73, 0x00, 0x0a, 0x09, 0x0a, 0x02, 0x76, 0x31, 0x12, 0x03, 0x50, 0x6f, 0x64,
        0x12, 0x1d, 0x0a, 0x17, 0x0a, 0x07, 0x73, 0x6e, 0x6f, 0x72, 0x6c, 0x61, 0x78, 0x12, 0x00,
        0x1a, 0x00, 0x22, 0x00, 0x2a, 0x00, 0x32, 0x00, 0x38, 0x00, 0x42, 0x00, 0x12, 0x00, 0x1a,
        0x00,
    ];
    let v = decode(&body).expect("decode");
    assert_eq!(
        v,
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "snorlax", "generation": 0, "creationTimestamp": null},
               "spec": {}, "status": {}})
    );
}

#[test]
fn configmap_with_data_binary_data_and_labels() {
    let mut raw = W::default();
    raw.msg(1, |m| {
        m.str(1, "cc").str(3, "default").msg(11, |e| {
            e.str(1, "app").str(2, "web");
        });
    })
    .msg(2, |e| {
        e.str(1, "a").str(2, "1");
    })
    .msg(2, |e| {
        e.str(1, "b").str(2, "");
    })
    .msg(3, |e| {
        e.str(1, "bin").bytes(2, &[0, 1, 2]);
    })
    .int(4, 1);
    let v = decode(&envelope("v1", "ConfigMap", &raw)).expect("decode");
    assert_eq!(
        v,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "cc", "namespace": "default", "labels": {"app": "web"}},
               "data": {"a": "1", "b": ""}, "binaryData": {"bin": "AAEC"}, "immutable": true})
    );
}

#[test]
fn deployment_with_replicas_zero_intorstring_quantities_and_inlined_structs() {
    let mut raw = W::default();
    raw.msg(1, |m| {
        m.str(1, "web");
    })
    .msg(2, |spec| {
        spec.int(1, 0) // replicas: 0 must survive
            .msg(4, |st| {
                st.str(1, "RollingUpdate").msg(2, |ru| {
                    ru.msg(1, |i| {
                        i.int(1, 1).str(3, "25%");
                    })
                    .msg(2, |i| {
                        i.int(1, 0).int(2, 2);
                    });
                });
            })
            .msg(3, |tpl| {
                tpl.msg(2, |ps| {
                    ps.msg(2, |c| {
                        c.str(1, "nginx")
                            .str(2, "nginx:1.27")
                            .msg(8, |res| {
                                res.msg(1, |e| {
                                    e.str(1, "cpu").msg(2, |q| {
                                        q.str(1, "500m");
                                    });
                                });
                            })
                            .msg(7, |env| {
                                env.str(1, "FROM").msg(3, |src| {
                                    src.msg(3, |cmk| {
                                        cmk.msg(1, |lor| {
                                            lor.str(1, "cfg");
                                        })
                                        .str(2, "key");
                                    });
                                });
                            })
                            .int(16, 0); // stdin: false is written by Go
                    })
                    .msg(1, |vol| {
                        vol.str(1, "scratch").msg(2, |vs| {
                            vs.msg(2, |_| {}); // emptyDir: {}
                        });
                    });
                });
            });
    });
    let v = decode(&envelope("apps/v1", "Deployment", &raw)).expect("decode");
    assert_eq!(v["spec"]["replicas"], json!(0));
    assert_eq!(
        v["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 2}})
    );
    let c = &v["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], json!("nginx:1.27"));
    assert_eq!(c["resources"]["limits"], json!({"cpu": "500m"}));
    assert_eq!(
        c["env"][0]["valueFrom"]["configMapKeyRef"],
        json!({"name": "cfg", "key": "key"})
    );
    assert_eq!(c["stdin"], json!(false));
    assert_eq!(
        v["spec"]["template"]["spec"]["volumes"][0],
        json!({"name": "scratch", "emptyDir": {}})
    );
}

#[test]
fn times_durations_negative_ints_and_raw_extensions() {
    let mut raw = W::default();
    raw.msg(1, |m| {
        m.str(1, "e").msg(8, |t| {
            t.int(1, 1_700_000_000);
        });
    })
    .msg(2, |obj| {
        obj.str(3, "p");
    })
    .msg(10, |t| {
        t.int(1, 1_700_000_000).int(2, 123_456_789);
    })
    .int(8, 3);
    let v = decode(&envelope("v1", "Event", &raw)).expect("decode");
    assert_eq!(
        v["metadata"]["creationTimestamp"],
        json!("2023-11-14T22:13:20Z")
    );
    assert_eq!(v["eventTime"], json!("2023-11-14T22:13:20.123456Z"));
    assert_eq!(v["involvedObject"], json!({"name": "p"}));
    assert_eq!(v["count"], json!(3));

    // int32 -1 is a 10-byte sign-extended varint on the wire
    assert_eq!(varint_value(Kind::I32, u64::MAX), json!(-1));

    let mut raw = W::default();
    raw.msg(1, |m| {
        m.str(1, "r");
    })
    .msg(2, |re| {
        re.bytes(1, br#"{"kind":"Pod","spec":{}}"#);
    })
    .int(3, 2);
    let v = decode(&envelope("apps/v1", "ControllerRevision", &raw)).expect("decode");
    assert_eq!(v["data"], json!({"kind": "Pod", "spec": {}}));
    assert_eq!(v["revision"], json!(2));
}

#[test]
fn bad_bodies_are_errors_not_panics() {
    assert!(decode(b"{}").is_err());
    assert!(decode(b"k8s\0").is_err());
    let mut truncated = envelope("v1", "ConfigMap", W::default().str(1, "x"));
    truncated.truncate(truncated.len() - 1);
    assert!(decode(&truncated).is_err());
    assert!(matches!(
        decode(&envelope("example.com/v1", "Widget", &W::default())),
        Err(Error::UnknownKind { .. })
    ));
    // a string that is not UTF-8
    let mut raw = W::default();
    raw.msg(1, |m| {
        m.bytes(1, &[0xff, 0xfe]);
    });
    assert!(decode(&envelope("v1", "ConfigMap", &raw)).is_err());
    // every prefix of a valid body fails or decodes, never panics
    let mut raw = W::default();
    raw.msg(1, |m| {
        m.str(1, "cc");
    })
    .msg(2, |e| {
        e.str(1, "a").str(2, "1");
    });
    let body = envelope("v1", "ConfigMap", &raw);
    for n in 0..body.len() {
        let _ = decode(&body[..n]);
    }
    // deep nesting is refused
    let mut deep = W::default();
    deep.str(1, "x");
    for _ in 0..200 {
        let mut outer = W::default();
        outer.bytes(4, &deep.0); // JSONSchemaProps.not? any message field will do below
        deep = outer;
    }
    let _ = decode(&envelope(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        &deep,
    ));
}
