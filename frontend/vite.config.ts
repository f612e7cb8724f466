/// <reference types="vitest/config" />
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// Django serves the build: frontend/dist is a STATICFILES_DIRS entry (whitenoise), so every asset
// URL starts with STATIC_URL; the HTML shell is rendered by Django's `app` view at /app/.
export default defineConfig({
  base: "/static/",
  plugins: [react()],
  build: { outDir: "dist", emptyOutDir: true, sourcemap: true, assetsDir: "app" },
  test: {
    environment: "jsdom",
    include: ["src/**/*.test.{ts,tsx}"],
    setupFiles: ["src/test-setup.ts"],
    // A page test types, waits for fake responses and re-renders: seconds on a loaded 2-core laptop
    // (the default 5 s failed there). The limits catch a hang, not a slow machine.
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
