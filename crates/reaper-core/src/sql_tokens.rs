//! Test support, shared by the planner's property test and the `planner` fuzz target
//! (`fuzz/src/lib.rs` includes this file): a statement's text split into what a check needs.

/// The quoted identifiers, the string literals and the number of placeholders (outside quotes)
/// of `sql`, whose identifiers are quoted with `ident_quote` and whose placeholders are
/// `placeholder` (`$` of `$1`, or `?`). Quotes inside are doubled.
pub(crate) fn tokens(
    sql: &str,
    ident_quote: char,
    placeholder: char,
) -> (Vec<String>, Vec<String>, usize) {
    let (mut idents, mut literals, mut placeholders) = (Vec::new(), Vec::new(), 0);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ident_quote || c == '\'' {
            let mut text = String::new();
            loop {
                match chars.next() {
                    Some(q) if q == c && chars.peek() == Some(&c) => {
                        chars.next();
                        text.push(c);
                    }
                    Some(q) if q == c => break,
                    Some(other) => text.push(other),
                    None => panic!("unterminated quote in {sql}"),
                }
            }
            if c == '\'' {
                literals.push(text);
            } else {
                idents.push(text);
            }
        } else if c == placeholder {
            placeholders += 1;
        }
    }
    (idents, literals, placeholders)
}
