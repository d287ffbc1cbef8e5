//! dotenv files as godotenv reads them (melange's `--env-file`): `KEY=value`, `export KEY=value`,
//! `KEY: value`, single quotes literal, double quotes with `\n` escapes and `${VAR}`, `#`
//! comments. Text in, variables out; `lookup` answers `${VAR}`s the file does not set (the
//! process environment, for the CLI).

use std::collections::BTreeMap;

pub fn parse(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let expand = |v: &str, vars: &BTreeMap<String, String>| -> String {
        let mut out = String::new();
        let mut it = v.chars().peekable();
        while let Some(c) = it.next() {
            if c == '\\' && it.peek() == Some(&'$') {
                out.push('$');
                it.next();
            } else if c == '$' {
                let braced = it.peek() == Some(&'{');
                if braced {
                    it.next();
                }
                let mut name = String::new();
                while let Some(&n) = it.peek() {
                    if n.is_ascii_alphanumeric() || n == '_' {
                        name.push(n);
                        it.next();
                    } else {
                        break;
                    }
                }
                if braced && it.peek() == Some(&'}') {
                    it.next();
                }
                if name.is_empty() {
                    out.push('$');
                } else {
                    out.push_str(
                        &vars
                            .get(&name)
                            .cloned()
                            .or_else(|| lookup(&name))
                            .unwrap_or_default(),
                    );
                }
            } else {
                out.push(c);
            }
        }
        out
    };
    let mut lines = text.lines().enumerate();
    while let Some((n, raw)) = lines.next() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(line);
        let sep = line
            .find(['=', ':'])
            .ok_or_else(|| format!("line {}: no '=' in {line:?}", n + 1))?;
        let key = line[..sep].trim().to_string();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(format!("line {}: {key:?} is not a variable name", n + 1));
        }
        let mut rest = line[sep + 1..].trim_start().to_string();
        let value = match rest.chars().next() {
            Some(q @ ('\'' | '"')) => {
                // A quoted value may run over several lines.
                let mut body = rest[1..].to_string();
                loop {
                    if let Some(end) = find_closing(&body, q) {
                        body.truncate(end);
                        break;
                    }
                    match lines.next() {
                        Some((_, more)) => {
                            body.push('\n');
                            body.push_str(more);
                        }
                        None => return Err(format!("line {}: the {q} quote is not closed", n + 1)),
                    }
                }
                if q == '\'' {
                    body
                } else {
                    let unescaped = body
                        .replace("\\n", "\n")
                        .replace("\\r", "\r")
                        .replace("\\\"", "\"");
                    expand(&unescaped, &vars)
                }
            }
            _ => {
                if let Some(c) = rest.find(" #") {
                    rest.truncate(c);
                }
                expand(rest.trim_end(), &vars)
            }
        };
        vars.insert(key, value);
    }
    Ok(vars)
}

/// The position of the closing quote `q` in `s` (a backslash escapes a double quote).
fn find_closing(s: &str, q: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if q == '"' && c == '\\' && !escaped {
            escaped = true;
            continue;
        }
        if c == q && !escaped {
            return Some(i);
        }
        escaped = false;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn dotenv_as_godotenv_reads_it() {
        let none = |_: &str| None;
        let v = parse(
            "# c\nexport A=1\nB: two words # note\nC='${A} literal'\nD=\"x${A}y\\n\"\nE=\"multi\nline\"\nF=\nG=${OUTSIDE}\n",
            &|n: &str| (n == "OUTSIDE").then(|| "o".to_string()),
        )
        .unwrap();
        assert_eq!(v["A"], "1");
        assert_eq!(v["B"], "two words");
        assert_eq!(v["C"], "${A} literal");
        assert_eq!(v["D"], "x1y\n");
        assert_eq!(v["E"], "multi\nline");
        assert_eq!(v["F"], "");
        assert_eq!(v["G"], "o");
        assert!(parse("no separator here\n", &none).is_err());
        assert!(parse("A='open\n", &none).is_err());
    }
}
