//! `TreeNode::decode` on arbitrary bytes. A node's id is the hash of its encoding, so decoding
//! must accept exactly one encoding per node: whatever decodes must re-encode to the same bytes.
#![no_main]

use cairn::format::tree::{self, TreeNode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(node) = TreeNode::decode(data) else {
        return;
    };
    assert!(node.level < tree::MAX_LEVEL);
    assert!(node.children.len() <= tree::MAX_CHILDREN);
    // Decoding promised the lengths do not overflow; `total_len` relies on it.
    let total = node
        .children
        .iter()
        .try_fold(0u64, |sum, c| sum.checked_add(c.len));
    assert_eq!(total, Some(node.total_len()));
    assert_eq!(
        node.encode(),
        data,
        "decoded node does not re-encode to its input"
    );
});
