//! Line diffs in the unified format, for `melange scan --diff` and `melange rebuild`.

/// The operations turning `a` into `b`, found with Myers' O(ND) algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Same,
    Del,
    Add,
}

fn edit_script(a: &[&str], b: &[&str]) -> Vec<Op> {
    let (n, m) = (a.len() as isize, b.len() as isize);
    let max = (n + m) as usize;
    let off = max as isize;
    let mut v = vec![0isize; 2 * max + 2];
    let mut trace: Vec<Vec<isize>> = vec![];
    'outer: for d in 0..=max as isize {
        trace.push(v.clone());
        let mut k = -d;
        while k <= d {
            let i = (k + off) as usize;
            let mut x = if k == -d || (k != d && v[i - 1] < v[i + 1]) {
                v[i + 1]
            } else {
                v[i - 1] + 1
            };
            let mut y = x - k;
            while x < n && y < m && a[x as usize] == b[y as usize] {
                x += 1;
                y += 1;
            }
            v[i] = x;
            if x >= n && y >= m {
                break 'outer;
            }
            k += 2;
        }
    }
    // Walk back through the saved frontiers.
    let mut ops = vec![];
    let (mut x, mut y) = (n, m);
    for d in (0..trace.len() as isize).rev() {
        let v = &trace[d as usize];
        let k = x - y;
        let i = (k + off) as usize;
        let prev_k = if k == -d || (k != d && v[i - 1] < v[i + 1]) {
            k + 1
        } else {
            k - 1
        };
        let prev_x = if d == 0 {
            0
        } else {
            v[(prev_k + off) as usize]
        };
        let prev_y = prev_x - prev_k;
        while x > prev_x && y > prev_y {
            ops.push(Op::Same);
            x -= 1;
            y -= 1;
        }
        if d > 0 {
            if x == prev_x {
                ops.push(Op::Add);
                y -= 1;
            } else {
                ops.push(Op::Del);
                x -= 1;
            }
        }
    }
    ops.reverse();
    ops
}

/// The lines of `text` with their line breaks; a last line without one says so, as diff does.
fn lines(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text.split_inclusive('\n').map(str::to_string).collect();
    if let Some(last) = out.last_mut()
        && !last.ends_with('\n')
    {
        last.push_str("\n\\ No newline at end of file\n");
    }
    out
}

/// A unified diff of `old` and `new` (3 lines of context) headed by `diff OLD NEW`, `--- OLD`
/// and `+++ NEW`, or `None` when they are the same. Without `comments`, lines starting with `#`
/// are left out of both sides first.
pub fn unified(
    old_name: &str,
    old: &str,
    new_name: &str,
    new: &str,
    comments: bool,
) -> Option<String> {
    if old == new {
        return None;
    }
    let mut x = lines(old);
    let mut y = lines(new);
    if !comments {
        x.retain(|l| !l.starts_with('#'));
        y.retain(|l| !l.starts_with('#'));
        if x == y {
            return None;
        }
    }
    let xa: Vec<&str> = x.iter().map(String::as_str).collect();
    let ya: Vec<&str> = y.iter().map(String::as_str).collect();
    let ops = edit_script(&xa, &ya);
    // Positions of every op in both files.
    let mut rows = vec![];
    let (mut i, mut j) = (0usize, 0usize);
    for op in &ops {
        rows.push((*op, i, j));
        match op {
            Op::Same => {
                i += 1;
                j += 1;
            }
            Op::Del => i += 1,
            Op::Add => j += 1,
        }
    }
    const C: usize = 3;
    let changed: Vec<usize> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.0 != Op::Same)
        .map(|(k, _)| k)
        .collect();
    let mut out = format!("diff {old_name} {new_name}\n--- {old_name}\n+++ {new_name}\n");
    let mut k = 0;
    while k < changed.len() {
        let start = changed[k].saturating_sub(C);
        let mut end = changed[k];
        // Join changes whose context would touch.
        while k + 1 < changed.len() && changed[k + 1] <= end + 2 * C + 1 {
            k += 1;
            end = changed[k];
        }
        let end = (end + C + 1).min(rows.len());
        let hunk = &rows[start..end];
        let (dels, adds) = hunk.iter().fold((0, 0), |(d, a), r| match r.0 {
            Op::Same => (d + 1, a + 1),
            Op::Del => (d + 1, a),
            Op::Add => (d, a + 1),
        });
        let first_x = hunk[0].1 + usize::from(dels > 0);
        let first_y = hunk[0].2 + usize::from(adds > 0);
        out.push_str(&format!("@@ -{first_x},{dels} +{first_y},{adds} @@\n"));
        for (op, i, j) in hunk {
            match op {
                Op::Same => {
                    out.push(' ');
                    out.push_str(&x[*i]);
                }
                Op::Del => {
                    out.push('-');
                    out.push_str(&x[*i]);
                }
                Op::Add => {
                    out.push('+');
                    out.push_str(&y[*j]);
                }
            }
        }
        k += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_is_none_and_changes_are_hunks() {
        assert_eq!(unified("a", "x\n", "b", "x\n", false), None);
        // Comment lines only differ: no diff unless asked.
        assert_eq!(unified("a", "# c\nx\n", "b", "x\n", false), None);
        assert!(unified("a", "# c\nx\n", "b", "x\n", true).is_some());
        let d = unified(
            "old",
            "1\n2\n3\n4\n5\n6\n7\n8\n9\n",
            "new",
            "1\n2\n3\n4\nfive\n6\n7\n8\n9\n",
            false,
        )
        .unwrap();
        assert_eq!(
            d,
            "diff old new\n--- old\n+++ new\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n"
        );
        let d = unified("o", "a\nb\n", "n", "a\nb\nc\n", false).unwrap();
        assert!(d.ends_with("@@ -1,2 +1,3 @@\n a\n b\n+c\n"), "{d}");
        let d = unified("o", "", "n", "a\n", false).unwrap();
        assert!(d.ends_with("@@ -0,0 +1,1 @@\n+a\n"), "{d}");
    }
}
