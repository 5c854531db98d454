//! Amounts as the bookkeeper reads them: to the cent, thousands grouped, with the
//! currency (`56,560.14 USD`). The values stay plain decimals in the CSV and the logs;
//! only what a person reads is grouped.

use rust_decimal::{Decimal, RoundingStrategy};

/// `amount` (a decimal, or its text) with thousands separators, two decimals and the
/// currency; text that is not a number (an empty cell) is left as it is.
pub fn shown(amount: &str, currency: &str) -> String {
    let Ok(d) = amount.trim().parse::<Decimal>() else {
        return amount.to_owned();
    };
    let cents = format!(
        "{:.2}",
        d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
    );
    let (sign, digits) = cents
        .strip_prefix('-')
        .map_or(("", cents.as_str()), |rest| ("-", rest));
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "00"));
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let text = format!("{sign}{grouped}.{fraction}");
    if currency.is_empty() {
        text
    } else {
        format!("{text} {currency}")
    }
}

/// The templates' `money` filter: `{{ t.amount | money(t.currency) }}`.
pub fn filter(amount: &minijinja::Value, currency: Option<&str>) -> String {
    let text = amount
        .as_str()
        .map_or_else(|| amount.to_string(), str::to_owned);
    if text.is_empty() || amount.is_undefined() || amount.is_none() {
        return String::new();
    }
    shown(&text, currency.unwrap_or_default())
}

/// An environment for the emails' templates, with the `money` filter.
pub fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.add_filter("money", |v: minijinja::Value, c: Option<String>| {
        filter(&v, c.as_deref())
    });
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_show_grouped_to_the_cent_with_their_currency() {
        assert_eq!(shown("56560.14", "USD"), "56,560.14 USD");
        assert_eq!(shown("1250003.755", "EUR"), "1,250,003.76 EUR");
        assert_eq!(shown("999.5", "USD"), "999.50 USD");
        assert_eq!(shown("0", "USD"), "0.00 USD");
        assert_eq!(shown("-1234", ""), "-1,234.00");
        assert_eq!(shown("100000", "CAD"), "100,000.00 CAD");
        assert_eq!(shown("", "USD"), "");
    }

    #[test]
    fn the_filter_reads_text_and_numbers() {
        let env = environment();
        let out = env
            .render_str(
                "{{ a | money(c) }}|{{ b | money(c) }}|{{ e | money(c) }}",
                minijinja::context! { a => "12345.6", b => 7, e => "", c => "USD" },
            )
            .unwrap();
        assert_eq!(out, "12,345.60 USD|7.00 USD|");
    }
}
