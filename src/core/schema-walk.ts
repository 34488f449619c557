/** Walking a zod schema: the schema (and default) at a path, and the keys a strict object accepts. */
import { z } from 'zod'

/** Peels wrappers (optional, default, pipe, ...) off a schema; remembers the first default met. */
function unwrapSchema(schema: z.ZodType | undefined): {
  schema: z.ZodType | undefined
  fallback?: { value: unknown }
} {
  let cur = schema
  let fallback: { value: unknown } | undefined
  for (let depth = 0; cur && depth < 32; depth++) {
    if (cur instanceof z.ZodDefault || cur instanceof z.ZodPrefault) {
      fallback ??= { value: (cur.def as { defaultValue: unknown }).defaultValue }
      cur = cur.unwrap() as z.ZodType
    } else if (
      cur instanceof z.ZodOptional ||
      cur instanceof z.ZodNullable ||
      cur instanceof z.ZodNonOptional ||
      cur instanceof z.ZodCatch ||
      cur instanceof z.ZodReadonly ||
      cur instanceof z.ZodLazy
    ) {
      cur = cur.unwrap() as z.ZodType
    } else if (cur instanceof z.ZodPipe) {
      cur = cur.in as z.ZodType
    } else {
      break
    }
  }
  return { schema: cur, fallback }
}

/** The schema at `path` inside `schema` (unwrapped), and its default value if it has one. */
export function schemaAt(
  schema: z.ZodType,
  path: readonly PropertyKey[],
): { schema: z.ZodType | undefined; fallback?: { value: unknown } } {
  let cur = unwrapSchema(schema)
  for (const key of path) {
    const s = cur.schema
    if (s instanceof z.ZodObject) cur = unwrapSchema(s.shape[key as string] as z.ZodType | undefined)
    else if (s instanceof z.ZodArray) cur = unwrapSchema(s.element as z.ZodType)
    else if (s instanceof z.ZodRecord) cur = unwrapSchema(s.valueType as z.ZodType)
    else return { schema: undefined }
  }
  return cur
}

/** The keys a strict object schema at `path` accepts (for "did you mean"). */
export function knownKeysAt(schema: z.ZodType, path: readonly PropertyKey[]): string[] {
  const at = schemaAt(schema, path).schema
  return at instanceof z.ZodObject ? Object.keys(at.shape) : []
}
