//! Format 3: the trees in binary after the JSON. A model reads back as it was written,
//! formats 1 and 2 still load, predict and write back as they did, and a damaged tree
//! section is refused by name (a checksum error when bytes flip; a named decoding error
//! when the checksum was recomputed over bad lengths), never a panic.

use std::sync::OnceLock;

use predict_buy_data::Table;
use predict_buy_model::{
    ArtifactError, DecodeError, Model, TrainConfig, TrainRequest, TreeSectionError, digest_of,
    train,
};
use sha2::Digest as _;

const TREES_MAGIC: &[u8] = b"PBTREES\0";

/// A small full-depth boosted model (the seed config's shape: `max_depth: null`), its
/// artifact, and test rows; trained once for the file.
fn fixture() -> &'static (Model, Vec<u8>, Table) {
    static F: OnceLock<(Model, Vec<u8>, Table)> = OnceLock::new();
    F.get_or_init(|| {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        predict_buy_data::synth::write_split(3, 5_000, 0.25, &mut a, &mut b).unwrap();
        let train_t = Table::from_reader(a.as_slice(), "train.csv").unwrap();
        let test_t = Table::from_reader(b.as_slice(), "test.csv").unwrap();
        let cfg: TrainConfig = serde_yaml_ng::from_str(
            "model: {name: GradientBoostingClassifier, params: {n_estimators: 4, max_depth: null}}\n",
        )
        .unwrap();
        let model = train(
            &TrainRequest {
                config: &cfg,
                train: &train_t,
                test: Some(&test_t),
                data_digest: None,
                trained_at: "2026-01-01T00:00:00Z".into(),
                tool_version: "test".into(),
                git_commit: None,
            },
            &predict_buy_model::Quiet,
        )
        .unwrap()
        .model;
        let bytes = model.to_bytes();
        (model, bytes, test_t)
    })
}

/// Wraps `payload` in the artifact frame with a valid checksum.
fn frame(version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(predict_buy_model::MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    let sum = sha2::Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// The payload of `bytes` and where its tree section starts within it.
fn payload_and_section(bytes: &[u8]) -> (Vec<u8>, usize) {
    let payload = bytes[20..bytes.len() - 32].to_vec();
    let at = payload
        .windows(TREES_MAGIC.len())
        .position(|w| w == TREES_MAGIC)
        .expect("a format-3 artifact has a tree section");
    (payload, at)
}

fn section_error(bytes: &[u8]) -> TreeSectionError {
    match Model::from_bytes(bytes) {
        Err(ArtifactError::Trees(e)) => e,
        other => panic!("expected a tree section error, got {other:?}"),
    }
}

#[test]
fn format_3_reads_back_as_written() {
    let (model, bytes, test) = fixture();
    assert_eq!(bytes[8..12], 3u32.to_le_bytes());
    assert!(model.ensemble().trees.iter().all(|t| t.is_narrow()));
    let loaded = Model::from_bytes(bytes).unwrap();
    assert_eq!(loaded.ensemble(), model.ensemble());
    assert_eq!(loaded.payload(), model.payload());
    assert_eq!(
        loaded.predict_table(test).unwrap(),
        model.predict_table(test).unwrap()
    );
    loaded.self_check().unwrap();
    assert_eq!(loaded.to_bytes(), *bytes);
    // The digest is of exactly the bytes written, whether computed or streamed.
    assert_eq!(model.digest(), digest_of(bytes));
    assert_eq!(loaded.digest(), digest_of(bytes));
    let mut sink = Vec::new();
    assert_eq!(model.write_to(&mut sink).unwrap(), digest_of(bytes));
    assert_eq!(sink, *bytes);
    // The JSON before the section holds no trees.
    let (payload, at) = payload_and_section(bytes);
    let json: serde_json::Value = serde_json::from_slice(&payload[..at]).unwrap();
    assert_eq!(json["ensemble"]["trees"], serde_json::json!([]));
    assert_eq!(json["format_version"], 3);
}

#[test]
fn binary_trees_are_a_fraction_of_the_json_ones() {
    let (model, bytes, _) = fixture();
    let json = serde_json::to_vec(&model.ensemble().trees).unwrap();
    let (payload, at) = payload_and_section(bytes);
    let binary = payload.len() - at;
    assert!(
        binary * 2 < json.len(),
        "trees in binary: {binary} bytes, as JSON: {}",
        json.len()
    );
}

/// Formats 1 and 2 (trees as JSON columns) load, predict as the model they were cut
/// from, and are written back byte for byte in their own format.
#[test]
fn formats_1_and_2_still_load_predict_and_write_back_unchanged() {
    let (model, _, test) = fixture();
    // As format 2 wrote it: the payload struct's JSON, trees included.
    let mut v2 = model.payload().clone();
    v2.format_version = 2;
    let old = frame(2, &serde_json::to_vec(&v2).unwrap());
    let loaded = Model::from_bytes(&old).unwrap();
    assert_eq!(loaded.ensemble(), model.ensemble());
    assert_eq!(
        loaded.predict_table(test).unwrap(),
        model.predict_table(test).unwrap()
    );
    loaded.self_check().unwrap();
    assert_eq!(loaded.to_bytes(), old);
    assert_eq!(loaded.digest(), digest_of(&old));

    let mut v1 = serde_json::to_value(&v2).unwrap();
    v1["format_version"] = 1.into();
    let ensemble = v1["ensemble"].as_object_mut().unwrap();
    ensemble.remove("precision");
    for tree in ensemble["trees"].as_array_mut().unwrap() {
        tree.as_object_mut().unwrap().remove("cover");
    }
    let old = frame(1, &serde_json::to_vec(&v1).unwrap());
    let loaded = Model::from_bytes(&old).unwrap();
    assert!(loaded.ensemble().trees.iter().all(|t| !t.has_cover()));
    let again = loaded.to_bytes();
    assert_eq!(again[8..12], 1u32.to_le_bytes());
    assert_eq!(Model::from_bytes(&again).unwrap().to_bytes(), again);
    for (a, b) in loaded
        .predict_table(test)
        .unwrap()
        .iter()
        .zip(model.predict_table(test).unwrap())
    {
        // The same trees, summed in f32 as format 1 did.
        assert!((a.probability - b.probability).abs() < 1e-5);
    }
}

/// A format-3 payload that is JSON alone, trees inline, is read too (that is what
/// serialising a [`predict_buy_model::Payload`] gives).
#[test]
fn a_format_3_payload_of_json_alone_loads() {
    let (model, _, test) = fixture();
    let bytes = frame(3, &serde_json::to_vec(model.payload()).unwrap());
    let loaded = Model::from_bytes(&bytes).unwrap();
    assert_eq!(
        loaded.predict_table(test).unwrap(),
        model.predict_table(test).unwrap()
    );
}

#[test]
fn a_truncated_or_flipped_section_is_refused() {
    let (_, bytes, _) = fixture();
    let (payload, at) = payload_and_section(bytes);
    let section = 20 + at;
    for cut in [section + 4, section + 100, bytes.len() - 40] {
        let err = Model::from_bytes(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(err, ArtifactError::Truncated { .. }),
            "cut at {cut}: {err}"
        );
    }
    for at in [section, section + 13, section + (payload.len() - at) / 2] {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x04;
        let err = Model::from_bytes(&flipped).unwrap_err();
        assert!(matches!(err, ArtifactError::Checksum), "byte {at}: {err}");
    }
}

/// Wrong lengths inside a section whose checksum is valid: each is named.
#[test]
fn wrong_lengths_in_the_section_are_named() {
    let (_, bytes, _) = fixture();
    let (payload, at) = payload_and_section(bytes);
    let with = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut p = payload.clone();
        edit(&mut p);
        frame(3, &p)
    };
    let count = at + TREES_MAGIC.len();
    let first_tree = count + 4;

    // The section cut short, its frame re-sealed.
    let err = section_error(&with(&|p| p.truncate(p.len() - 7)));
    assert!(
        matches!(
            err,
            TreeSectionError::Tree(DecodeError::Short {
                tree: 3,
                missing: 7,
                ..
            })
        ),
        "{err}"
    );
    // One tree more than there are.
    let err = section_error(&with(&|p| p[count] += 1));
    assert!(
        matches!(
            err,
            TreeSectionError::Tree(DecodeError::Short { tree: 4, .. })
        ),
        "{err}"
    );
    // One tree fewer: the last one's bytes are left over.
    let err = section_error(&with(&|p| p[count] -= 1));
    assert!(
        matches!(err, TreeSectionError::Trailing { trees: 3, extra } if extra > 8),
        "{err}"
    );
    assert!(err.to_string().contains("follow its last tree"), "{err}");
    // A node count far beyond the bytes: refused before anything is allocated.
    let err = section_error(&with(&|p| {
        p[first_tree..first_tree + 4].copy_from_slice(&u32::MAX.to_le_bytes())
    }));
    assert!(
        matches!(
            err,
            TreeSectionError::Tree(DecodeError::Short { tree: 0, .. })
        ),
        "{err}"
    );
    // One node fewer: the columns shift, and what is left over is refused.
    let err = Model::from_bytes(&with(&|p| {
        let n = u32::from_le_bytes(p[first_tree..first_tree + 4].try_into().unwrap());
        p[first_tree..first_tree + 4].copy_from_slice(&(n - 1).to_le_bytes())
    }))
    .unwrap_err();
    assert!(
        matches!(err, ArtifactError::Trees(_) | ArtifactError::Invalid(_)),
        "{err}"
    );
    // A column width that does not exist.
    let err = section_error(&with(&|p| p[first_tree + 5] = 3));
    assert_eq!(
        err,
        TreeSectionError::Tree(DecodeError::Width {
            tree: 0,
            column: "left child",
            width: 3
        })
    );
    // Bytes after the last tree.
    let err = section_error(&with(&|p| p.extend_from_slice(&[0; 5])));
    assert_eq!(err, TreeSectionError::Trailing { extra: 5, trees: 4 });
    // Not a tree section at all.
    let err = section_error(&with(&|p| p[at] = b'X'));
    assert_eq!(err, TreeSectionError::Magic);
    // A section cut inside its tree count.
    let err = section_error(&with(&|p| p.truncate(count + 2)));
    assert_eq!(err, TreeSectionError::Short { missing: 2 });
    let err = Model::from_bytes(&with(&|p| p.truncate(count + 2))).unwrap_err();
    assert!(err.to_string().contains("tree section"), "{err}");
}

#[test]
fn trees_both_inline_and_in_binary_are_refused() {
    let (model, bytes, _) = fixture();
    let (payload, at) = payload_and_section(bytes);
    let mut both = serde_json::to_vec(model.payload()).unwrap();
    both.extend_from_slice(&payload[at..]);
    let err = section_error(&frame(3, &both));
    assert_eq!(err, TreeSectionError::TreesTwice { inline: 4 });
}

/// Damage that decodes (a child pointing backwards) is refused by validation, by
/// tree and node.
#[test]
fn a_section_that_decodes_to_a_broken_tree_is_invalid() {
    let (model, _, _) = fixture();
    let tree = &model.ensemble().trees[0];
    let root = tree.node(0);
    assert!(!root.is_leaf());
    // Rewrite the first tree's first left child (its column starts after the node
    // count, the widths, the features and the thresholds) to point at the root.
    let bytes = model.to_bytes();
    let (mut payload, at) = payload_and_section(&bytes);
    let first_tree = at + TREES_MAGIC.len() + 4;
    let n = tree.len();
    let fw = usize::from(payload[first_tree + 4]);
    let lw = usize::from(payload[first_tree + 5]);
    let left = first_tree + 8 + n * fw + n * 4;
    payload[left..left + lw].fill(0);
    let err = Model::from_bytes(&frame(3, &payload)).unwrap_err();
    assert!(matches!(err, ArtifactError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("tree 0: node 0"), "{err}");
}
