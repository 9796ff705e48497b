//! Object exchange: export an object graph to bytes in the self-describing
//! layout (per field a 7-byte id hashed from its name, a type/flags byte
//! and the data; nested objects inline; see `docs/exchange.md`) and import
//! it into another Vm, into a class whose fields match by name and type.
//!
//! Run with `cargo run --example exchange`.

use kiln::{Config, Error, Linker, Source, Value, Vm};

// The sender and the receiver declare the same fields, in different orders
// and with extra members: fields match by name, not position.
const SENDER: &str = r#".library orders
.class public Item {
  .field public mutable sku: string
  .field public mutable qty: i32
}
.class public Order {
  .field public mutable id: i64
  .field public mutable items: Item[]
  .field public mutable total: f64
}
"#;

const RECEIVER: &str = r#".library billing
.class public Item {
  .field public mutable qty: i32
  .field public mutable sku: string
}
.class public Order {
  .field public mutable total: f64
  .field public mutable id: i64
  .field public mutable items: Item[]
  .field public mutable note: string
  .method public count() -> i32 {
    .locals (i: i32, n: i32)
  top:
    ldloc i
    ldarg this
    ldfld Order::items
    ldlen
    bge done
    ldloc n
    ldarg this
    ldfld Order::items
    ldloc i
    ldelem Item
    ldfld Item::qty
    add
    stloc n
    ldloc i
    ldc.i32 1
    add
    stloc i
    br top
  done:
    ldloc n
    ret
  }
}
"#;

/// The example, for a given configuration (the test runs it in both modes).
pub fn run(config: &Config) -> Result<(), Error> {
    let sender = Vm::new(config, &Linker::new(), &[Source::kasm("orders", SENDER)])?;
    let order = sender.new_object("Order", &[])?;
    order.set("id", 1001i64)?;
    order.set("total", 59.5f64)?;
    let items = sender.new_array("Item", 2)?;
    for (i, (sku, qty)) in [("apple", 3), ("pear", 4)].into_iter().enumerate() {
        let item = sender.new_object("Item", &[])?;
        item.set("sku", sender.new_string(sku)?)?;
        item.set("qty", qty)?;
        items.set_index(i, item)?;
    }
    order.set("items", &items)?;

    let bytes = order.export()?;
    println!("exported {} bytes", bytes.len());

    let receiver = Vm::new(config, &Linker::new(), &[Source::kasm("billing", RECEIVER)])?;
    let copy = receiver.import("Order", &bytes)?;
    assert_eq!(copy.get("id")?, Value::I64(1001));
    assert_eq!(copy.get("total")?, Value::F64(59.5));
    assert_eq!(copy.get("note")?, Value::Null); // not in the encoding
    assert_eq!(copy.call("count", &[])?, Value::I32(7));

    // Malformed or mismatched input is an error naming where, never a panic.
    let err = receiver
        .import("Order", &bytes[..bytes.len() - 3])
        .unwrap_err();
    assert!(matches!(err, Error::Exchange(_)));
    println!("truncated input: {err}");
    let err = receiver.import("Item", &bytes).unwrap_err();
    println!("wrong class: {err}");
    assert!(matches!(err, Error::Exchange(_)));
    Ok(())
}

#[allow(dead_code)]
fn main() -> Result<(), Error> {
    run(&Config::from_env()?)
}
