import { useCallback, useEffect, useState } from "react";
import { errorMessage } from "./client";

export interface Resource<T> {
  data: T | undefined;
  error: string;
  loading: boolean;
  reload: () => void;
}

interface Loaded<T> {
  key: string;
  data: T | undefined;
  error: string;
}

/** Loads `load()` when `key` changes; `reload()` fetches again. The latest request wins, and the
 * previous data stays on screen while the next loads. */
export function useResource<T>(load: () => Promise<T>, key: string): Resource<T> {
  const [tick, setTick] = useState(0);
  const request = `${key}#${tick}`;
  const [loaded, setLoaded] = useState<Loaded<T>>({ key: "", data: undefined, error: "" });

  useEffect(() => {
    let current = true;
    load().then(
      (data) => {
        if (current) setLoaded({ key: request, data, error: "" });
      },
      (exc: unknown) => {
        if (current) setLoaded((prev) => ({ key: request, data: prev.data, error: errorMessage(exc) }));
      },
    );
    return () => {
      current = false;
    };
    // `load` is a fresh closure every render: `key` says when its inputs changed.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [request]);

  const reload = useCallback(() => {
    setTick((n) => n + 1);
  }, []);
  return { data: loaded.data, error: loaded.error, loading: loaded.key !== request, reload };
}
