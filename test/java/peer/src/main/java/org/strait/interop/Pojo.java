package org.strait.interop;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/** A value with scalar, nested list, nested map and nested object fields, for round trips. */
public class Pojo implements Serializable {
    private static final long serialVersionUID = 1L;

    private String name;
    private int count;
    private long id;
    private double ratio;
    private boolean flag;
    private List<String> tags = new ArrayList<>();
    private Map<String, List<Integer>> scores = new LinkedHashMap<>();
    private Pojo child;

    public Pojo() {}

    /** A sample value: every field set, a child one level down. */
    public static Pojo sample() {
        Pojo p = new Pojo();
        p.name = "alpha → beta ✓";
        p.count = 42;
        p.id = 1L << 40;
        p.ratio = 0.25;
        p.flag = true;
        p.tags.add("one");
        p.tags.add("two");
        p.tags.add("");
        p.scores.put("a", List.of(1, 2, 3));
        p.scores.put("b", new ArrayList<>());
        Pojo c = new Pojo();
        c.name = "child";
        c.count = -1;
        c.tags.add("nested");
        c.scores.put("z", List.of(9));
        p.child = c;
        return p;
    }

    public String getName() { return name; }
    public void setName(String name) { this.name = name; }
    public int getCount() { return count; }
    public void setCount(int count) { this.count = count; }
    public long getId() { return id; }
    public void setId(long id) { this.id = id; }
    public double getRatio() { return ratio; }
    public void setRatio(double ratio) { this.ratio = ratio; }
    public boolean isFlag() { return flag; }
    public void setFlag(boolean flag) { this.flag = flag; }
    public List<String> getTags() { return tags; }
    public void setTags(List<String> tags) { this.tags = tags; }
    public Map<String, List<Integer>> getScores() { return scores; }
    public void setScores(Map<String, List<Integer>> scores) { this.scores = scores; }
    public Pojo getChild() { return child; }
    public void setChild(Pojo child) { this.child = child; }

    @Override
    public boolean equals(Object o) {
        if (this == o) {
            return true;
        }
        if (!(o instanceof Pojo)) {
            return false;
        }
        Pojo p = (Pojo) o;
        return count == p.count && id == p.id && Double.compare(ratio, p.ratio) == 0 && flag == p.flag
                && Objects.equals(name, p.name) && Objects.equals(tags, p.tags)
                && Objects.equals(scores, p.scores) && Objects.equals(child, p.child);
    }

    @Override
    public int hashCode() {
        return Objects.hash(name, count, id, ratio, flag, tags, scores, child);
    }

    @Override
    public String toString() {
        return "Pojo{name=" + name + ", count=" + count + ", id=" + id + ", ratio=" + ratio + ", flag=" + flag
                + ", tags=" + tags + ", scores=" + scores + ", child=" + child + "}";
    }
}
