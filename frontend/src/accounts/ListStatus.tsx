// What a listed resource shows around its table: the load's error, the first load, and the
// message for an empty list.
import type { ReactNode } from "react";
import type { Resource } from "../api/useResource";
import { Empty, Loading, Notice } from "../ui/components";

export function ListStatus({ list, what, empty }: { list: Resource<{ items: unknown[] }>; what: string; empty: ReactNode }) {
  return (
    <>
      <Notice>{list.error}</Notice>
      {list.loading && !list.data ? <Loading what={what} /> : null}
      {list.data && list.data.items.length === 0 ? <Empty>{empty}</Empty> : null}
    </>
  );
}
