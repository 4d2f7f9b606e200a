"""Multi-row INSERTs for the bulk writers (an import's profiles, events and outbox rows), and
the unsaved instances they write (:func:`new`).

``QuerySet.bulk_create`` compiles every value of every row through the SQL compiler, which
costs more than the database's own work once a load reaches a million rows. :func:`insert`
writes the same rows, with the same per-field conversion (``Field.get_db_prep_save``), but
resolves each field's conversion once per field: a ``str``, ``int`` or ``bool`` for a text,
integer, boolean or foreign-key column, and None, go to the driver as they are. Like
``bulk_create`` it sends no signals and calls no ``save()``; the caller applies the model's
invariants (``ConsentEvent.objects.append`` labels who recorded each event).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

from django.db import connections, models

M = TypeVar("M", bound=models.Model)


@dataclass(frozen=True)
class _Layout:
    """A model's concrete fields in ``__init__``'s positional order: each attname's position,
    the defaults (constants as ``Field.get_default`` gives them; callables, e.g. ``dict`` or
    ``timezone.now``, called per instance), and the names of its relations."""

    position: dict[str, int]
    constants: tuple[Any, ...]
    factories: tuple[tuple[int, Callable[[], Any]], ...]
    relations: frozenset[str]


@cache
def _layout(model: type[models.Model]) -> _Layout:
    fields = list(model._meta.concrete_fields)
    constants: list[Any] = []
    factories: list[tuple[int, Callable[[], Any]]] = []
    for index, field in enumerate(fields):
        if field.has_default() and callable(field.default):
            factories.append((index, field.get_default))
            constants.append(None)
        else:  # Field.get_default gives the same object every time
            constants.append(field.get_default())
    return _Layout(
        position={f.attname: i for i, f in enumerate(fields)},
        constants=tuple(constants),
        factories=tuple(factories),
        relations=frozenset(f.name for f in fields if f.is_relation),
    )


def new(model: type[M], /, **values: Any) -> M:
    """An unsaved ``model`` instance, as ``model(**values)`` builds it, for bulk loads.

    ``values``: concrete fields by attname (``channel``, ``profile_id``), relations by name
    (``profile=obj``, set through the field's descriptor as ``Model.__init__`` does, so an
    unsaved related object is read again at INSERT), and properties (set last, as
    ``__init__`` sets them). Every other concrete field gets its default. ``Model.__init__``
    dispatches keyword values field by field; its positional form, given every concrete field,
    sets attributes directly. Raises ``TypeError`` for a name that is neither a field nor a
    property, as ``__init__`` does.
    """
    layout = _layout(model)
    args = list(layout.constants)
    for index, factory in layout.factories:
        args[index] = factory()
    position = layout.position
    related: list[tuple[str, Any]] = []
    later: list[tuple[str, Any]] = []
    for name, value in values.items():
        index = position.get(name)
        if index is not None:
            args[index] = value
        elif name in layout.relations:
            related.append((name, value))
        elif isinstance(getattr(model, name, None), property):
            later.append((name, value))
        else:
            raise TypeError(f"{model.__name__}() got an unexpected keyword argument '{name}'")
    obj = model(*args)
    for name, value in related:
        setattr(obj, name, value)
    for name, value in later:
        setattr(obj, name, value)
    return obj


_PLAIN = {
    models.CharField: str,
    models.TextField: str,
    models.BooleanField: bool,
    models.IntegerField: int,
}


def _converter(field: models.Field, connection: Any) -> Callable[[Any], Any]:
    """How one field's Python value becomes the driver's: as given when it already is the
    column's plain type, else ``field.get_db_prep_save`` (datetimes, JSON, IP addresses...)."""
    target = field.target_field if field.is_relation else field  # type: ignore[union-attr]
    plain = next((kind for base, kind in _PLAIN.items() if isinstance(target, base)), None)
    prepare = field.get_db_prep_save
    if plain is not None and not field.is_relation:

        def convert(value: Any) -> Any:
            if value is None or type(value) is plain:
                return value
            return prepare(value, connection)

        return convert
    if plain is int:  # a foreign key to an integer primary key

        def convert_key(value: Any) -> Any:
            if value is None or type(value) is int:
                return value
            return prepare(value, connection)

        return convert_key
    last: list[Any] = [object(), None]
    empty: dict[type, Any] = {}
    if isinstance(field, models.JSONField):
        empty = {dict: prepare({}, connection), list: prepare([], connection)}

    def convert_other(value: Any) -> Any:
        if value is None:
            return None
        if value is last[0]:  # the batch's shared ``now``: converted once
            return last[1]
        if not value and type(value) in empty:  # a JSON column's default {} or []
            return empty[type(value)]
        last[0], last[1] = value, prepare(value, connection)
        return last[1]

    return convert_other


def insert(
    model: type[models.Model],
    objs: Sequence[models.Model],
    *,
    using: str = "default",
    batch_size: int | None = None,
) -> None:
    """INSERT the unsaved ``objs`` of ``model`` in multi-row statements; each gets its pk.

    Foreign keys to objects saved since they were assigned are read from those objects (as
    ``bulk_create`` does). ``auto_now``/``auto_now_add`` dates are stamped. Needs a database
    that returns rows from a bulk INSERT (PostgreSQL; SQLite 3.35+), as ``append`` does.
    """
    if not objs:
        return
    meta = model._meta
    pk = meta.pk
    auto_pk = isinstance(pk, models.AutoField | models.BigAutoField | models.SmallAutoField)
    if auto_pk and any(obj.pk is not None for obj in objs):
        # Rows given their own ids (as bulk_create allows) are written with them.
        _insert(model, [o for o in objs if o.pk is not None], using, batch_size, with_pk=True)
        objs = [o for o in objs if o.pk is None]
    _insert(model, objs, using, batch_size, with_pk=not auto_pk)


def _insert(
    model: type[models.Model],
    objs: Sequence[models.Model],
    using: str,
    batch_size: int | None,
    *,
    with_pk: bool,
) -> None:
    if not objs:
        return
    connection = connections[using]
    meta = model._meta
    pk = meta.pk
    auto_pk = not with_pk
    fields = [f for f in meta.concrete_fields if with_pk or f is not pk]
    stamped = [
        f for f in fields if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)
    ]
    relations = [f for f in fields if f.is_relation]
    converters = [_converter(f, connection) for f in fields]
    attnames = [f.attname for f in fields]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
    returning = ""
    if auto_pk:
        returning = f" RETURNING {quote(meta.db_table)}.{quote(pk.column)}"
    size = max(1, connection.ops.bulk_batch_size(fields, objs))
    if batch_size:
        size = min(size, batch_size)
    for obj in objs:
        for field in stamped:
            field.pre_save(obj, True)
        for field in relations:
            if getattr(obj, field.attname) is None and field.is_cached(obj):
                related = field.get_cached_value(obj)
                if related is not None:
                    setattr(obj, field.attname, related.pk)
    with connection.cursor() as cursor:
        for start in range(0, len(objs), size):
            chunk = objs[start : start + size]
            params: list[Any] = []
            for obj in chunk:
                values = obj.__dict__
                params.extend(
                    convert(values[name])
                    for convert, name in zip(converters, attnames, strict=True)
                )
            sql = (
                f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES "
                + ", ".join([row_sql] * len(chunk))
                + returning
            )
            cursor.execute(sql, params)
            if auto_pk:
                for obj, (key,) in zip(chunk, cursor.fetchall(), strict=True):
                    obj.pk = key
            for obj in chunk:
                obj._state.adding = False
                obj._state.db = using
