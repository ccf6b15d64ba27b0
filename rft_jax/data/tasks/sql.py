"""Text-to-SQL over a generated SQLite shop database.

The database travels with each example as a SQL script (metadata `db_sql`) so a
file is self-contained; the `sql_result` reward builds a fresh in-memory copy per
completion and compares result rows with the reference query's.
"""

from __future__ import annotations

import sqlite3

import numpy as np

from rft_jax.data.example import Example, stable_id
from rft_jax.data.tasks.prompt import PromptStyle

LEVELS = ("easy", "medium", "hard")
CITIES = ("Lyon", "Osaka", "Porto", "Austin", "Accra")
CATEGORIES = ("kitchen", "garden", "office", "sport")
FIRST = ("Ana", "Ben", "Chloe", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivan", "Jun", "Kim", "Leo")
INSTRUCTION = "Answer with a single SQLite query in a ```sql code block."

SCHEMA = """CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT NOT NULL);
CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL, category TEXT NOT NULL, price REAL NOT NULL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),
  product_id INTEGER NOT NULL REFERENCES products(id), quantity INTEGER NOT NULL, order_date TEXT NOT NULL);"""


def make_database_sql(rng: np.random.Generator, customers: int = 12, products: int = 10, orders: int = 40) -> str:
    rows = [SCHEMA]
    for i, name in enumerate(FIRST[:customers], start=1):
        rows.append(f"INSERT INTO customers VALUES ({i}, '{name}', '{rng.choice(CITIES)}');")
    for i in range(1, products + 1):
        price = float(rng.integers(100, 5000)) / 100
        rows.append(f"INSERT INTO products VALUES ({i}, 'item{i:02d}', '{rng.choice(CATEGORIES)}', {price:.2f});")
    for i in range(1, orders + 1):
        customer, product = rng.integers(1, customers + 1), rng.integers(1, products + 1)
        rows.append(f"INSERT INTO orders VALUES ({i}, {customer}, {product}, "
                    f"{rng.integers(1, 6)}, '2024-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}');")
    return "\n".join(rows)


def questions(level: str, rng: np.random.Generator) -> tuple[str, str]:
    city, cat = str(rng.choice(CITIES)), str(rng.choice(CATEGORIES))
    product = f"item{int(rng.integers(1, 11)):02d}"
    k, month, spend = int(rng.integers(2, 5)), int(rng.integers(1, 13)), int(rng.integers(4, 20)) * 10
    table = {
        "easy": [
            (f"How many customers live in {city}?", f"SELECT COUNT(*) FROM customers WHERE city = '{city}'"),
            (f"List the names of the products in the {cat} category.",
             f"SELECT name FROM products WHERE category = '{cat}'"),
            (f"How many orders were placed in month {month} of 2024?",
             f"SELECT COUNT(*) FROM orders WHERE order_date LIKE '2024-{month:02d}-%'"),
        ],
        "medium": [
            (f"What is the total quantity ordered of {product}?",
             f"SELECT SUM(o.quantity) FROM orders o JOIN products p ON p.id = o.product_id WHERE p.name = '{product}'"),
            (f"Which customers (names) have ordered {product}?",
             "SELECT DISTINCT c.name FROM customers c JOIN orders o ON o.customer_id = c.id "
             f"JOIN products p ON p.id = o.product_id WHERE p.name = '{product}'"),
            (f"What is the average quantity per order for customers living in {city}, rounded to 2 decimals?",
             "SELECT ROUND(AVG(o.quantity), 2) FROM orders o JOIN customers c ON c.id = o.customer_id "
             f"WHERE c.city = '{city}'"),
        ],
        "hard": [
            ("What is the total revenue (price times quantity) per product category? "
             "Return category and revenue, highest revenue first.",
             "SELECT p.category, ROUND(SUM(p.price * o.quantity), 2) AS revenue FROM orders o "
             "JOIN products p ON p.id = o.product_id GROUP BY p.category ORDER BY revenue DESC"),
            (f"Who are the top {k} customers by number of orders? Return name and order count, "
             "most orders first, ties broken by name.",
             "SELECT c.name, COUNT(*) AS n FROM customers c JOIN orders o ON o.customer_id = c.id "
             f"GROUP BY c.id ORDER BY n DESC, c.name LIMIT {k}"),
            (f"Which customers spent more than ${spend} in total (price times quantity)? Return their names.",
             "SELECT c.name FROM customers c JOIN orders o ON o.customer_id = c.id JOIN products p "
             f"ON p.id = o.product_id GROUP BY c.id HAVING SUM(p.price * o.quantity) > {spend}"),
            (f"Which products in the {cat} category have never been ordered? Return their names.",
             f"SELECT name FROM products WHERE category = '{cat}' AND id NOT IN (SELECT product_id FROM orders)"),
        ],
    }[level]
    return table[int(rng.integers(len(table)))]


def generate_sql(n: int, *, seed: int, levels: tuple[str, ...] = LEVELS,
                 prompt: PromptStyle = PromptStyle(system="You write SQLite queries.", instruction=INSTRUCTION)
                 ) -> list[Example]:
    rng = np.random.default_rng(seed)
    db_sql = make_database_sql(rng)
    db = sqlite3.connect(":memory:")
    db.executescript(db_sql)
    examples, seen = [], set()
    for _ in range(50 * n + 50):
        if len(examples) == n:
            break
        level = levels[len(examples) % len(levels)]
        question, query = questions(level, rng)
        if question in seen or not db.execute(query).fetchall() or db.execute(query).fetchall() == [(None,)]:
            continue  # skip repeats and questions whose answer is empty in this database
        seen.add(question)
        messages = prompt.messages(f"Database schema:\n{SCHEMA}\n\nQuestion: {question}")
        examples.append(Example(
            id=f"sql-{seed}-{len(examples):05d}-{stable_id(messages, query)[3:11]}", messages=messages,
            reference_answer=query,
            metadata={"data_source": "rft_jax/sql", "level": level, "difficulty": LEVELS.index(level) + 1,
                      "db_sql": db_sql}))
    db.close()
    if len(examples) < n:
        raise ValueError(f"could only make {len(examples)} distinct SQL questions for levels {levels}")
    return examples
